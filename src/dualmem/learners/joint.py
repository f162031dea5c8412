"""`joint`: the upper bound. After each task it trains on all data seen so far (every past task's
training set is kept, outside any memory budget: it is the oracle, not a method), from its current
weights (`warm_start: true`) or from the initial ones. Its recall rule trains offline on all N items."""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from dualmem.core.params import param
from dualmem.data.stream import Task
from dualmem.evals.recall_networks import offline_recall
from dualmem.evals.recall_protocol import RecallOutcome, RecallParams, RecallStream
from dualmem.learners.common.base import LearnerContext
from dualmem.learners.common.head import HeadConfig, HeadLearner


@dataclass(frozen=True)
class JointConfig(HeadConfig):
    warm_start: bool = param(True)


class JointLearner(HeadLearner):
    name = "joint"
    Config = JointConfig
    upper_bound = True

    def __init__(self, cfg: JointConfig, ctx: LearnerContext) -> None:
        super().__init__(cfg, ctx)
        self.initial = copy.deepcopy((self.encoder.state_dict(), self.head.state_dict()))
        self.seen_ids = np.empty(0, dtype=np.int64)
        self.seen_labels = torch.empty(0, dtype=torch.long)

    def before_task(self, task: Task) -> None:
        super().before_task(task)
        if not self.cfg.warm_start:
            self.encoder.load_state_dict(self.initial[0])
            self.head.load_state_dict(self.initial[1])
        self.seen_ids = np.concatenate([self.seen_ids, task.ids])
        self.seen_labels = torch.cat([self.seen_labels, task.y])

    def fit(self, task: Task, progress: bool = False) -> None:
        x_all = self.ctx.train_x[torch.from_numpy(self.seen_ids)]
        for epoch in range(self.epochs):
            order = np.random.default_rng([task.seed, 7, task.index, epoch]).permutation(len(self.seen_ids))
            for start in range(0, len(order), self.batch_size):
                rows = order[start : start + self.batch_size]
                self.guarded_observe(x_all[rows], self.seen_labels[rows], self.seen_ids[rows])

    def recall(self, stream: RecallStream, cfg: RecallParams, progress: bool = False) -> RecallOutcome:
        return offline_recall(self.encoder, stream, cfg, progress)

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "seen_ids": torch.from_numpy(self.seen_ids),
                "seen_labels": self.seen_labels}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self.seen_ids = state["seen_ids"].numpy()
        self.seen_labels = state["seen_labels"]

    def kept_items(self) -> tuple[torch.Tensor, torch.Tensor]:
        return torch.from_numpy(self.seen_ids), self.seen_labels

    def memory_cost(self) -> dict[str, int]:
        n = len(self.seen_ids)
        return {**super().memory_cost(), "items": n, "item_bytes": n * self.ctx.raw_item_bytes}
