"""The shared learner interface.

A learner sees the stream one task at a time through `learn_task`, which runs the hooks
`before_task` -> `fit` (by default: epochs of `observe` steps over the task's batches) -> `after_task`.
Learners with a slow consolidation phase implement `sleep`, which the `consolidate` stage calls after
each task. The base class owns the leakage guard: every batch is checked against the classes the
stream has revealed so far.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import torch

from dualmem.data.stream import Task
from dualmem.encoders import Encoder, check_classes
from dualmem.errors import LeakageError
from dualmem.params import Section


@dataclass
class LearnerContext:
    """What every learner is built from: the stream's encoder, the label space, the seed, and the
    stream's training inputs (so that states can refer to stored items by id)."""

    encoder: Encoder
    n_classes: int
    seed: int
    train_x: torch.Tensor


class Learner(ABC):
    name: ClassVar[str]
    has_sleep: ClassVar[bool] = False

    def __init__(self, cfg: Section, ctx: LearnerContext) -> None:
        self.cfg = cfg
        self.ctx = ctx
        self.visible_classes: set[int] = set()
        self.tasks_seen = 0

    @classmethod
    def validate(cls, cfg: Section) -> None:
        """Fail early, naming the key, on bad params; by default builds nothing."""
        return None

    # -- the stream ---------------------------------------------------------------------------
    def learn_task(self, task: Task, progress: bool = False) -> None:
        self.before_task(task)
        self.fit(task, progress)
        self.after_task(task)

    def before_task(self, task: Task) -> None:
        self.visible_classes |= set(task.classes)

    def fit(self, task: Task, progress: bool = False) -> None:
        for epoch in range(self.epochs):
            for x, y, ids in task.batches(self.batch_size, epoch):
                self.guarded_observe(x, y, ids)

    def after_task(self, task: Task) -> None:
        self.tasks_seen += 1

    def guarded_observe(self, x: torch.Tensor, y: torch.Tensor, ids: np.ndarray) -> None:
        check_classes(y, self.visible_classes, f"learner {self.name}")
        self.observe(x, y, ids)

    @abstractmethod
    def observe(self, x: torch.Tensor, y: torch.Tensor, ids: np.ndarray) -> None:
        """One learning step on one batch."""

    def sleep(self, task: Task) -> None:
        """Offline consolidation after a task; only learners with `has_sleep` do anything here."""
        return None

    def wake_state_after_sleep(self, wake: dict[str, Any], slept: dict[str, Any] | None) -> dict[str, Any]:
        """The state to sleep from: the wake state after this task, carrying over what earlier
        sleeps consolidated (`slept`: the state after the previous sleep, None before the first)."""
        return wake

    @property
    def epochs(self) -> int:
        return 1

    @property
    def batch_size(self) -> int:
        return 128

    # -- inference ----------------------------------------------------------------------------
    @abstractmethod
    def predict_proba(self, x: torch.Tensor) -> torch.Tensor:
        """Class probabilities over all n_classes, shape (n, n_classes)."""

    def batched_proba(self, x: torch.Tensor, batch_size: int = 2048) -> torch.Tensor:
        """`predict_proba` over x in batches (bounded memory for large evaluation sets)."""
        return torch.cat([self.predict_proba(x[i : i + batch_size]) for i in range(0, len(x), batch_size)])

    def predict(self, x: torch.Tensor, batch_size: int = 2048) -> torch.Tensor:
        return self.batched_proba(x, batch_size).argmax(1)

    @abstractmethod
    def features(self, x: torch.Tensor) -> torch.Tensor:
        """The representation the learner would hand to a downstream task (Test 4)."""

    def known_classes(self) -> set[int]:
        """Every class this learner has fit a parameter or stored an item for."""
        return set(self.visible_classes)

    # -- state --------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {"visible_classes": sorted(self.visible_classes), "tasks_seen": self.tasks_seen}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.visible_classes = set(state["visible_classes"])
        self.tasks_seen = int(state["tasks_seen"])

    @abstractmethod
    def memory_cost(self) -> dict[str, int]:
        """What the learner keeps: parameter count and bytes, stored items and bytes."""


def check_unrevealed(learner: Learner, held_out: list[int]) -> None:
    """Raise LeakageError if the learner knows any held-out class before that class's test."""
    leaked = learner.known_classes() & set(held_out)
    if leaked:
        raise LeakageError(f"learner {learner.name} knew held-out classes {sorted(leaked)} before their test")
