"""Few-shot episodes as the learners see them (features only), the linear-head fit that is the
default way to learn new classes from shots, and the memory-based way (shots written to a memory)."""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch.nn import functional as F

from dualmem.memory.episodic import EpisodicMemory
from dualmem.optim import adam


@dataclass(frozen=True)
class HeadFit:
    """How new linear rows are fit on shots: full-batch Adam steps and learning rate."""

    steps: int
    lr: float


@dataclass
class Episodes:
    """A batch of E episodes of one shape, as features of the learner that reads them."""

    support: torch.Tensor  # (E, S, d) features of the shots
    support_y: torch.Tensor  # (E, S) local labels: positions in `classes`
    query: torch.Tensor  # (E, Q, d) features of the queries
    classes: torch.Tensor  # (E, C) the global class of each local label

    @property
    def n_way(self) -> int:
        return int(self.classes.shape[1])

    def support_global(self, e: int) -> torch.Tensor:
        """Global labels of episode e's shots."""
        return self.classes[e][self.support_y[e]]


def fit_heads(xs: torch.Tensor, ys: torch.Tensor, n_out: int, fit: HeadFit,
              fixed: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Independent linear heads per episode (xs: E x S x d), zero init, full-batch Adam on the mean
    cross-entropy; `fixed` (E x S x m) are logits of frozen rows put before the trained ones (ys then
    index the concatenation)."""
    n_ep, n_shots, dim = xs.shape
    weight = torch.zeros(n_ep, dim, n_out, requires_grad=True)
    bias = torch.zeros(n_ep, 1, n_out, requires_grad=True)
    optimiser = adam([weight, bias], fit.lr)
    with torch.enable_grad():
        for _ in range(fit.steps):
            logits = torch.baddbmm(bias, xs, weight)
            if fixed is not None:
                logits = torch.cat([fixed, logits], dim=2)
            loss = F.cross_entropy(logits.reshape(n_ep * n_shots, -1), ys.reshape(-1), reduction="sum") / n_shots
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
    return weight.detach(), bias.detach()


def fresh_memory_scores(episodes: Episodes, k: int, temperature: float) -> torch.Tensor:
    """Each episode's shots written to a fresh episodic memory (k capped by the support size), its
    queries read by similarity-weighted kNN: (E, Q, n_way) probabilities."""
    out = []
    for e in range(len(episodes.support)):
        memory = EpisodicMemory(episodes.support.shape[2], episodes.n_way, k=min(k, episodes.support.shape[1]),
                                temperature=temperature)
        memory.write(episodes.support[e], episodes.support_y[e])
        out.append(memory.read(episodes.query[e]).probs)
    return torch.stack(out)


def added_shots_scores(memory: EpisodicMemory, episodes: Episodes,
                       read: Callable[[EpisodicMemory, torch.Tensor], torch.Tensor] | None = None) -> torch.Tensor:
    """Each episode's shots (global labels) written into a copy of `memory`, its queries read over the
    episode's classes: (E, Q, n_way). `read(memory, queries) -> probabilities over all classes`
    (default: the memory's kNN readout). `memory` itself is never changed."""
    out = []
    for e in range(len(episodes.support)):
        # a shallow copy shares the stored tensors: write() concatenates into new ones and never
        # edits them in place, so the learner's memory stays as it was
        copied = copy.copy(memory)
        copied.write(episodes.support[e], episodes.support_global(e))
        probs = read(copied, episodes.query[e]) if read else copied.read(episodes.query[e]).probs
        out.append(probs[:, episodes.classes[e]])
    return torch.stack(out)
