"""The shared learner interface: the stream hooks and the capabilities the tests call.

Stream (Avalanche-style hooks, Mammoth-style step): `learn_task` runs `before_task` -> `fit` (by
default: epochs of `observe` steps over the task's batches) -> `after_task`. Learners with a slow
consolidation phase implement `sleep`, which the `consolidate` stage calls after each task. The base
class owns the leakage guard: every batch is checked against the classes the stream has revealed.

Capabilities (what Tests 1-5 call; no test asks which class a learner is):
- `features(x)`: the representation handed downstream (Test 4; the input of every other capability);
- `proba_from_features(f)` / `predict_proba(x)`: class probabilities over all classes (Test 1);
- `fewshot_scores(episodes)`: learn new classes from a few shots, fresh label space (Test 2);
- `generalised_scores(episodes, known)`: add new classes beside the known ones (Test 2, K ∪ U);
- `novelty_from_features(f)`: higher = more novel (Test 3);
- `recall(stream, cfg)`: store N arbitrary cue -> target associations shown once, recall them (Test 5).
Defaults here need only `features` and `proba_from_features`; `HeadLearner` (common/head.py) gives the
head-based rules, and a memory-based learner overrides only what differs.

Hyperparameters: each learner declares `Config`, a dataclass of its `learners.<name>` section (fields
made with `dualmem.core.params.param`), parsed and validated once by `parse`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import torch

from dualmem.core.errors import LeakageError, ParamsError
from dualmem.core.params import Section, parse_config
from dualmem.data.prepared import Images
from dualmem.data.stream import Task
from dualmem.encoders import Encoder, check_classes
from dualmem.evals.recall_memory import knn_recall
from dualmem.evals.recall_protocol import RecallOutcome, RecallParams, RecallStream
from dualmem.learners.common.readouts import Episodes, HeadFit, fit_heads

LABEL_BYTES = 8  # an int64 label per stored item


@dataclass
class LearnerContext:
    """What every learner is built from: the stream's encoder, the label space, the seed, the stream's
    training inputs (so that states can refer to stored items by id) and the memory budget in bytes
    (`memory.budget_bytes`; None = unbounded) that every learner storing items respects."""

    encoder: Encoder
    n_classes: int
    seed: int
    train_x: Images  # indexed by stored ids; rows come back as float32
    budget_bytes: int | None = None

    @property
    def raw_item_bytes(self) -> int:
        """Bytes of one stored raw item: a uint8 image and its label."""
        return self.train_x.shape[1] + LABEL_BYTES

    def item_capacity(self, item_bytes: int, who: str) -> int | None:
        """How many items of `item_bytes` bytes the budget holds (None = unbounded)."""
        if self.budget_bytes is None:
            return None
        capacity = self.budget_bytes // item_bytes
        if capacity < 1:
            raise ParamsError("memory.budget_bytes", f"is {self.budget_bytes}, less than one item of {who} "
                              f"({item_bytes} B)", f"use at least {item_bytes}")
        return capacity


@dataclass(frozen=True)
class NoConfig:
    """For learners without hyperparameters."""


class Learner(ABC):
    name: ClassVar[str]
    Config: ClassVar[type] = NoConfig
    has_sleep: ClassVar[bool] = False
    upper_bound: ClassVar[bool] = False  # an oracle (joint): shown, never the "best other learner"

    def __init__(self, cfg: Any, ctx: LearnerContext) -> None:
        self.cfg = cfg
        self.ctx = ctx
        self.visible_classes: set[int] = set()
        self.tasks_seen = 0
        self.samples_trained = 0  # samples through a training step, replayed ones included

    @classmethod
    def parse(cls, section: Section) -> Any:
        """The validated config of `learners.<name>` (exit 2 naming the key on a bad value)."""
        return parse_config(cls.Config, section)

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
        """One learning step on one batch of the stream (ids: rows of the training set)."""

    def sleep(self, task: Task) -> None:
        """Offline consolidation after a task; only learners with `has_sleep` do anything here."""
        return None

    def wake_state_after_sleep(self, wake: dict[str, Any], slept: dict[str, Any] | None) -> dict[str, Any]:
        """The state to sleep from: the wake state after this task, carrying over what earlier
        sleeps consolidated (`slept`: the state after the previous sleep, None before the first)."""
        return wake

    @property
    def epochs(self) -> int:
        return int(getattr(self.cfg, "epochs", 1))

    @property
    def batch_size(self) -> int:
        return int(getattr(self.cfg, "batch_size", 128))

    # -- capabilities -------------------------------------------------------------------------
    @abstractmethod
    def features(self, x: torch.Tensor) -> torch.Tensor:
        """The representation the learner hands downstream (Test 4), batched, without gradients."""

    @abstractmethod
    def proba_from_features(self, feats: torch.Tensor) -> torch.Tensor:
        """Class probabilities over all n_classes from `features` output, shape (n, n_classes)."""

    def logits_from_features(self, feats: torch.Tensor) -> torch.Tensor:
        """Class scores whose argmax is the prediction; log-probabilities unless a learner has logits."""
        return self.proba_from_features(feats).clamp_min(1e-12).log()

    @torch.no_grad()
    def predict_proba(self, x: torch.Tensor) -> torch.Tensor:
        return self.proba_from_features(self.features(x))

    def batched_proba(self, x: torch.Tensor, batch_size: int = 2048) -> torch.Tensor:
        """`predict_proba` over x in batches (bounded memory for large evaluation sets)."""
        return torch.cat([self.predict_proba(x[i : i + batch_size]) for i in range(0, len(x), batch_size)])

    def predict(self, x: torch.Tensor, batch_size: int = 2048) -> torch.Tensor:
        return self.batched_proba(x, batch_size).argmax(1)

    @torch.no_grad()
    def fewshot_scores(self, episodes: Episodes, fit: HeadFit) -> torch.Tensor:
        """(E, Q, n_way) scores of each episode's queries after learning its shots, in a fresh label space.
        Default: a new linear head per episode (zero init, full-batch Adam) on frozen features."""
        weight, bias = fit_heads(episodes.support, episodes.support_y, episodes.n_way, fit)
        return torch.baddbmm(bias, episodes.query, weight)

    @torch.no_grad()
    def generalised_scores(self, episodes: Episodes, known: list[int], fit: HeadFit) -> torch.Tensor:
        """(E, Q, |K| + |U|) scores over the known classes K (first, in `known` order) and the new ones
        after learning U's shots (their local labels are >= |K|). Default: the learner's own K scores stay fixed
        and new linear rows for U are fit on the shots against them."""
        k_idx = torch.tensor(known)
        old_support = self.logits_from_features(episodes.support.flatten(0, 1))[:, k_idx]
        old_query = self.logits_from_features(episodes.query.flatten(0, 1))[:, k_idx]
        n_ep = len(episodes.support)
        fixed = old_support.reshape(n_ep, -1, len(known))
        weight, bias = fit_heads(episodes.support, episodes.support_y, episodes.n_way - len(known), fit,
                                 fixed=fixed)
        new = torch.baddbmm(bias, episodes.query, weight)
        return torch.cat([old_query.reshape(n_ep, -1, len(known)), new], dim=2)

    @torch.no_grad()
    def novelty_from_features(self, feats: torch.Tensor) -> torch.Tensor:
        """Novelty score per item, higher = more novel. Default: 1 - max class probability (MSP)."""
        return 1.0 - self.proba_from_features(feats).max(1).values

    def recall(self, stream: RecallStream, cfg: RecallParams, progress: bool = False) -> RecallOutcome:
        """Store the stream's N cue -> target items (each shown once, in order), then recall every target
        from its corrupted cue, for every prefix N. Default: a fresh episodic memory of this learner's
        features within the memory budget."""
        capacity = self.ctx.item_capacity(self.feature_item_bytes(), self.name)
        return knn_recall(self.features, stream, cfg, capacity, progress=progress)

    def feature_item_bytes(self) -> int:
        """Bytes of one stored feature vector (float32) and its label."""
        return 4 * int(self.features(self.ctx.train_x[:1]).shape[1]) + LABEL_BYTES

    def known_classes(self) -> set[int]:
        """Every class this learner has fit a parameter or stored an item for."""
        return set(self.visible_classes)

    # -- state --------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {"visible_classes": sorted(self.visible_classes), "tasks_seen": self.tasks_seen,
                "samples_trained": self.samples_trained}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.visible_classes = set(state["visible_classes"])
        self.tasks_seen = int(state["tasks_seen"])
        self.samples_trained = int(state.get("samples_trained", 0))

    @abstractmethod
    def memory_cost(self) -> dict[str, int]:
        """What the learner keeps: {"params", "param_bytes", "items", "item_bytes"}."""


def parameter_cost(*modules: torch.nn.Module, items: int = 0, item_bytes: int = 0) -> dict[str, int]:
    """memory_cost() for float32 modules plus stored items."""
    n = sum(p.numel() for m in modules for p in m.parameters())
    return {"params": n, "param_bytes": 4 * n, "items": items, "item_bytes": item_bytes}


def check_unrevealed(learner: Learner, held_out: list[int]) -> None:
    """Raise LeakageError if the learner knows any held-out class before that class's test."""
    leaked = learner.known_classes() & set(held_out)
    if leaked:
        raise LeakageError(f"learner {learner.name} knew held-out classes {sorted(leaked)} before their test")
