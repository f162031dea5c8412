"""Test 6: sequential domain fine-tuning of a byte-level language model (prose -> legal -> medical -> code),
the forgetting problem the dual memory was proposed for. Corpora, model, learners, protocol, evaluation."""
