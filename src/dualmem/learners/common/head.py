"""`HeadLearner`: the head-based learners' shared machinery and their default capabilities.

A copy of the stream's encoder plus one linear head over all classes (class-incremental, single
head), trained by Adam (a fresh optimiser per task). A learner on it writes its `observe` step with
`self.logits(x)` and `self.step(loss, n_samples)`; it gets every test for free:
features = encoder output, probabilities = softmax of the head, few-shot = new linear rows on frozen
features, generalised few-shot (K ∪ U) = new rows for U fit beside K's own rows, with kept items of K as
negatives where the learner keeps any, novelty = 1 - max softmax, recall = a copy of its network with a
new head trained online.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from dualmem.core.optim import Adam, adam
from dualmem.core.params import param
from dualmem.core.seeding import derive_seed, seeded_generator
from dualmem.data.stream import Task
from dualmem.evals.recall_networks import online_recall
from dualmem.evals.recall_protocol import RecallOutcome, RecallParams, RecallStream
from dualmem.learners.common.base import Learner, LearnerContext, parameter_cost
from dualmem.learners.common.readouts import Episodes, HeadFit, fit_heads, known_negatives

KNOWN_NEGATIVES = 50  # kept items per class of K that the new rows of U are fit against


@dataclass(frozen=True)
class HeadConfig:
    """The optimiser settings every head-based learner shares (Hsu et al. 2018: Adam, 4 epochs)."""

    epochs: int = param(minimum=1)
    lr: float = param(minimum=0.0)
    batch_size: int = param(minimum=1)


class HeadLearner(Learner):
    Config = HeadConfig

    def __init__(self, cfg: Any, ctx: LearnerContext) -> None:
        super().__init__(cfg, ctx)
        torch.manual_seed(derive_seed(self.name, "head", ctx.seed))
        self.encoder = copy.deepcopy(ctx.encoder)
        self.head = nn.Linear(self.encoder.out_dim, ctx.n_classes)
        self.optimiser: Adam | None = None

    def parameters(self) -> list[nn.Parameter]:
        return [*self.encoder.parameters(), *self.head.parameters()]

    def new_optimiser(self) -> None:
        self.optimiser = adam(self.parameters(), self.cfg.lr)

    def before_task(self, task: Task) -> None:
        super().before_task(task)
        self.new_optimiser()
        self.encoder.train()

    def after_task(self, task: Task) -> None:
        super().after_task(task)
        self.encoder.eval()

    # -- the training step --------------------------------------------------------------------
    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """Head logits with gradients (training mode)."""
        return self.head(self.encoder(x))

    def step(self, loss: torch.Tensor, n_samples: int) -> None:
        """One optimiser step on `loss`, computed on `n_samples` samples (replayed ones included)."""
        assert self.optimiser is not None, "observe() outside a task"
        self.optimiser.zero_grad()
        loss.backward()
        self.optimiser.step()
        self.samples_trained += n_samples

    def observe(self, x: torch.Tensor, y: torch.Tensor, ids: np.ndarray) -> None:
        """Plain cross-entropy on the batch (finetune); other learners add replay or penalties."""
        self.step(F.cross_entropy(self.logits(x), y), len(y))

    # -- capabilities -------------------------------------------------------------------------
    @torch.no_grad()
    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.encoder.encode(x)

    @torch.no_grad()
    def logits_from_features(self, feats: torch.Tensor) -> torch.Tensor:
        return self.head(feats)

    @torch.no_grad()
    def proba_from_features(self, feats: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.logits_from_features(feats), dim=1)

    def kept_items(self) -> tuple[torch.Tensor, torch.Tensor] | None:
        """Training-set ids and labels of the items this learner keeps (its buffer); None = it keeps none."""
        return None

    @torch.no_grad()
    def generalised_scores(self, episodes: Episodes, known: list[int], fit: HeadFit) -> torch.Tensor:
        """K's own logits beside new rows for U. A learner that keeps items of K fits U's rows on the shots
        and on up to `KNOWN_NEGATIVES` kept items per class of K as negatives (class-balanced loss), so a
        row is never fit on U's shots alone (which lets U win every query); one that keeps nothing has
        only the shots (the base rule)."""
        kept = self.kept_items()
        if kept is None:
            return super().generalised_scores(episodes, known, fit)
        generator = seeded_generator(self.name, "known-negatives", self.ctx.seed)
        ids, local = known_negatives(*kept, known, KNOWN_NEGATIVES, generator)
        n_ep = len(episodes.support)
        negatives = self.features(self.ctx.train_x[ids]).expand(n_ep, -1, -1)
        xs = torch.cat([episodes.support, negatives], dim=1)
        ys = torch.cat([episodes.support_y, local.expand(n_ep, -1)], dim=1)
        k_idx = torch.tensor(known)
        fixed = self.logits_from_features(xs.flatten(0, 1))[:, k_idx].reshape(n_ep, -1, len(known))
        weight, bias = fit_heads(xs, ys, episodes.n_way - len(known), fit, fixed=fixed, balanced=True)
        old = self.logits_from_features(episodes.query.flatten(0, 1))[:, k_idx].reshape(n_ep, -1, len(known))
        return torch.cat([old, torch.baddbmm(bias, episodes.query, weight)], dim=2)

    def recall(self, stream: RecallStream, cfg: RecallParams, progress: bool = False) -> RecallOutcome:
        """A copy of this learner's encoder with a new head, trained online in one pass."""
        return online_recall(self.encoder, stream, cfg, progress)

    # -- state --------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "encoder": self.encoder.state_dict(), "head": self.head.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self.encoder.load_state_dict(state["encoder"])
        self.head.load_state_dict(state["head"])
        self.encoder.eval()

    def memory_cost(self) -> dict[str, int]:
        return parameter_cost(self.encoder, self.head)
