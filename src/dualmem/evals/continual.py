"""Test 1 — class-incremental continual learning.

For each learner and seed: the accuracy matrix R[i][j] (test accuracy on task j after learning
task i, single head over all classes), and the metrics of `dualmem.metrics` on it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from dualmem.data.stream import Stream
from dualmem.learners import Learner
from dualmem.metrics import average_accuracy_curve, continual_metrics
from dualmem.runner import build_learner, final_state_path, load_learner_state

STREAM = "continual"


@dataclass
class ContinualResult:
    learner: str
    seed: int
    R: np.ndarray
    metrics: dict[str, float]
    memory: list[dict[str, int]]  # memory cost after each task

    def to_json(self) -> dict:
        return {
            "learner": self.learner,
            "seed": self.seed,
            "accuracy_matrix": self.R.tolist(),
            "average_accuracy_curve": average_accuracy_curve(self.R).tolist(),
            "metrics": self.metrics,
            "memory": self.memory,
        }


def accuracy(learner: Learner, x: torch.Tensor, y: torch.Tensor) -> float:
    return float((learner.predict(x) == y).float().mean()) if len(y) else float("nan")


def evaluate_learner(params: dict, name: str, stream: Stream) -> ContinualResult:
    learner = build_learner(params, name, stream)
    tests = [stream.test_split(stream.task_classes(j)) for j in range(stream.n_tasks)]
    R = np.zeros((stream.n_tasks, stream.n_tasks))
    memory = []
    for i in range(stream.n_tasks):
        memory.append(load_learner_state(learner, final_state_path(name, stream.name, stream.seed, i)))
        for j, (x, y) in enumerate(tests):
            R[i, j] = accuracy(learner, x, y)
    return ContinualResult(name, stream.seed, R, continual_metrics(R), memory)
