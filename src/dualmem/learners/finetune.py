"""`finetune`: the gradient baseline. Encoder plus one head, trained by Adam task after task with
nothing to protect old classes — the learner that forgets."""

from __future__ import annotations

from dualmem.learners.common.head import HeadLearner


class FinetuneLearner(HeadLearner):
    name = "finetune"
