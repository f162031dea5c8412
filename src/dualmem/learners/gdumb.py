"""`gdumb`: GDumb, greedy sampler and dumb learner (Prabhu, Torr & Dokania, ECCV 2020).

- Sampler (`observe`): every stream item is offered once to a class-balanced memory within the memory
  budget (the Buffer's "balanced" policy: while full, an item of a class with fewer items than the
  largest class replaces a random item of the largest). No gradient step on the stream.
- Learner (`after_task`): a fresh copy of the stream's initial encoder and head is trained from scratch
  on the memory only, for `epochs` passes in shuffled batches. GDumb uses SGD (lr 0.05 -> 0.0005,
  cosine annealing with warm restarts, batch 16, gradient clipping 10, many passes); to stay cheap we
  use Adam at the suite's lr, one cosine annealing cycle from `lr` to `min_lr` over the whole
  retraining, gradient-norm clipping at `clip` (GDumb's value) and ~20 passes.
- Prediction (class-incremental): softmax of the head over the classes present in memory when the
  network was trained (the others are masked out, in training and at test, as GDumb's class mask).
Few-shot, novelty, recall and transfer use the head-based defaults on its encoder.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch.nn import functional as F

from dualmem.core.optim import adam
from dualmem.core.params import param
from dualmem.data.stream import Task
from dualmem.learners.common.base import LearnerContext, parameter_cost
from dualmem.learners.common.buffer import Buffer
from dualmem.learners.common.head import HeadConfig, HeadLearner


@dataclass(frozen=True)
class GDumbConfig(HeadConfig):
    # epochs: passes over the memory per retraining; lr: Adam's starting rate (cosine-annealed to min_lr)
    min_lr: float = param(minimum=0.0)  # GDumb anneals to maxlr / 100
    clip: float = param(minimum=0.0)  # gradient-norm clipping (GDumb: 10); 0 = none


class GDumbLearner(HeadLearner):
    name = "gdumb"
    Config = GDumbConfig

    def __init__(self, cfg: GDumbConfig, ctx: LearnerContext) -> None:
        super().__init__(cfg, ctx)
        # the initial network every retraining starts from (kept between tasks: counted in memory_cost)
        self.initial = copy.deepcopy((self.encoder.state_dict(), self.head.state_dict()))
        self.buffer = Buffer(ctx, self.name, policy="balanced")
        self.trained = torch.zeros(ctx.n_classes, dtype=torch.bool)  # classes of the last retraining

    def fit(self, task: Task, progress: bool = False) -> None:
        """One pass of the greedy sampler over the task (no training on the stream)."""
        for x, y, ids in task.batches(self.batch_size, 0):
            self.guarded_observe(x, y, ids)

    def observe(self, x: torch.Tensor, y: torch.Tensor, ids: np.ndarray) -> None:
        self.buffer.add(ids, y)

    def after_task(self, task: Task) -> None:
        super().after_task(task)
        self.retrain(task)

    def retrain(self, task: Task) -> None:
        """Train the initial network from scratch on the memory, over the classes in it."""
        self.encoder.load_state_dict(self.initial[0])
        self.head.load_state_dict(self.initial[1])
        self.trained = torch.bincount(self.buffer.labels, minlength=self.ctx.n_classes) > 0
        n = len(self.buffer)
        if n == 0:
            return
        self.optimiser = adam(self.parameters(), self.cfg.lr)
        x_all, y_all = self.buffer.x(), self.buffer.labels
        steps_per_epoch = math.ceil(n / self.batch_size)
        total = self.epochs * steps_per_epoch
        self.encoder.train()
        for epoch in range(self.epochs):
            order = np.random.default_rng([self.ctx.seed, task.index, epoch, 29]).permutation(n)
            for i, start in enumerate(range(0, n, self.batch_size)):
                t = epoch * steps_per_epoch + i
                lr = self.cfg.min_lr + 0.5 * (self.cfg.lr - self.cfg.min_lr) * (1 + math.cos(math.pi * t / total))
                for group in self.optimiser.param_groups:
                    group["lr"] = lr
                rows = torch.from_numpy(order[start : start + self.batch_size])
                logits = self.logits(x_all[rows]).masked_fill(~self.trained, float("-inf"))
                loss = F.cross_entropy(logits, y_all[rows])
                self.optimiser.zero_grad()
                loss.backward()
                if self.cfg.clip > 0:
                    torch.nn.utils.clip_grad_norm_(self.parameters(), self.cfg.clip)
                self.optimiser.step()
                self.samples_trained += len(rows)
        self.encoder.eval()

    # -- capabilities -------------------------------------------------------------------------
    @torch.no_grad()
    def logits_from_features(self, feats: torch.Tensor) -> torch.Tensor:
        logits = self.head(feats)
        return logits.masked_fill(~self.trained, float("-inf")) if self.trained.any() else logits

    def known_classes(self) -> set[int]:
        return super().known_classes() | set(torch.unique(self.buffer.labels).tolist())

    # -- state --------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "buffer": self.buffer.state_dict(), "trained": self.trained}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self.buffer.load_state_dict(state["buffer"])
        self.trained = state["trained"]

    def kept_items(self) -> tuple[torch.Tensor, torch.Tensor]:
        return self.buffer.ids, self.buffer.labels

    def memory_cost(self) -> dict[str, int]:
        """The trained network, the initial one it restarts from, and the memory."""
        cost = parameter_cost(self.encoder, self.head, items=len(self.buffer), item_bytes=self.buffer.nbytes())
        initial = sum(v.numel() for part in self.initial for v in part.values())
        return {**cost, "params": cost["params"] + initial, "param_bytes": cost["param_bytes"] + 4 * initial}
