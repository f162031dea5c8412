"""What every learner file builds on: the interface (`base`), the head-based defaults (`head`), the
item buffer (`buffer`) and the few-shot readouts (`readouts`). Not learners themselves."""
