"""Shared machinery of the gradient-trained learners: a copy of the encoder plus one head over all
classes (class-incremental, single head), trained by Adam with cross-entropy."""

from __future__ import annotations

import copy
from typing import Any

import numpy as np
import torch
from torch import nn

from dualmem.learners.base import Learner, LearnerContext
from dualmem.params import Section
from dualmem.seeding import derive_seed


class GradientLearner(Learner):
    def __init__(self, cfg: Section, ctx: LearnerContext) -> None:
        super().__init__(cfg, ctx)
        self.validate(cfg)
        self.lr = cfg.number("lr", minimum=0.0)
        self._epochs = cfg.integer("epochs", minimum=1)
        self._batch_size = cfg.integer("batch_size", minimum=1)
        torch.manual_seed(derive_seed(self.name, "head", ctx.seed))
        self.encoder = copy.deepcopy(ctx.encoder)
        self.head = nn.Linear(self.encoder.out_dim, ctx.n_classes)
        self.optimiser: torch.optim.Optimizer | None = None

    @classmethod
    def validate(cls, cfg: Section) -> None:
        cfg.number("lr", minimum=0.0)
        cfg.integer("epochs", minimum=1)
        cfg.integer("batch_size", minimum=1)

    @property
    def epochs(self) -> int:
        return self._epochs

    @property
    def batch_size(self) -> int:
        return self._batch_size

    def parameters(self) -> list[nn.Parameter]:
        return [*self.encoder.parameters(), *self.head.parameters()]

    def new_optimiser(self) -> None:
        self.optimiser = torch.optim.Adam(self.parameters(), lr=self.lr)

    def before_task(self, task: Any) -> None:
        super().before_task(task)
        self.new_optimiser()
        self.encoder.train()

    def after_task(self, task: Any) -> None:
        super().after_task(task)
        self.encoder.eval()

    def observe(self, x: torch.Tensor, y: torch.Tensor, ids: np.ndarray) -> None:
        assert self.optimiser is not None, "observe() outside a task"
        loss = nn.functional.cross_entropy(self.head(self.encoder(x)), y)
        self.optimiser.zero_grad()
        loss.backward()
        self.optimiser.step()

    @torch.no_grad()
    def logits(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.encoder(x))

    def predict_proba(self, x: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.logits(x), dim=1)

    @torch.no_grad()
    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.encoder.encode(x)

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "encoder": self.encoder.state_dict(), "head": self.head.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self.encoder.load_state_dict(state["encoder"])
        self.head.load_state_dict(state["head"])
        self.encoder.eval()

    def memory_cost(self) -> dict[str, int]:
        n_params = sum(p.numel() for p in self.parameters())
        return {"params": n_params, "param_bytes": 4 * n_params, "items": 0, "item_bytes": 0}
