"""Learners, one file each, on the interface in `base.py`. Adding a learner is one new file plus one
line in REGISTRY."""

from __future__ import annotations

from dualmem.learners.base import Learner, LearnerContext
from dualmem.learners.dualmem import DualMemoryLearner
from dualmem.learners.finetune import FinetuneLearner
from dualmem.learners.joint import JointLearner

REGISTRY: dict[str, type[Learner]] = {
    cls.name: cls for cls in (FinetuneLearner, JointLearner, DualMemoryLearner)
}

__all__ = ["REGISTRY", "Learner", "LearnerContext"]
