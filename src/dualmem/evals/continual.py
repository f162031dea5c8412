"""Test 1 — class-incremental continual learning.

For each learner and seed: the accuracy matrix R[i][j] (test accuracy on task j after learning
task i, single head over all classes), and the metrics of `dualmem.metrics` on it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from dualmem.core.results import Row, TestResults
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


TEST_LABEL = "1 Continual (class-incremental)"


def continual_rows() -> list[Row]:
    return [
        Row(TEST_LABEL, "retention", "Retention", True, {"dualmem": "0.980 ± 0.005", "finetune": "0.006 ± 0.006"}),
        Row(TEST_LABEL, "final_accuracy", "Final average accuracy", True),
        Row(TEST_LABEL, "forgetting", "Forgetting", False),
        Row(TEST_LABEL, "backward_transfer", "Backward transfer", True, in_table=False),
    ]


def describe(params: dict, runs: list[ContinualResult]) -> str:
    n_tasks = runs[0].R.shape[0] if runs else 0
    return (f"{params['data']['source']}, class-incremental, {n_tasks} tasks, single head over all classes; "
            f"class order per seed ({params['protocol']['class_order']}); encoder mode "
            f"{params['encoder']['mode']}; {len({r.seed for r in runs})} seeds")


def collect_results(params: dict, runs: list[ContinualResult]) -> TestResults:
    results = TestResults("continual", protocol=describe(params, runs), rows=continual_rows())
    for result in runs:
        for metric, value in result.metrics.items():
            results.add(metric, result.learner, result.seed, value)
        results.memory[result.learner] = result.memory[-1]
    results.extra["runs"] = [r.to_json() for r in runs]
    return results
