"""Slow semantic memory: a parametric classifier on encoder features trained only by consolidation —
interleaved, class-balanced replay drawn from the episodic memory, with distillation toward its own
outputs from before this consolidation (on the classes it already knew)."""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

from dualmem.memory.episodic import EpisodicMemory
from dualmem.optim import adam


@dataclass(frozen=True)
class ConsolidationParams:
    steps: int
    batch_size: int
    lr: float
    distill_weight: float
    distill_temperature: float


class SemanticMemory(nn.Module):
    def __init__(self, dim: int, n_classes: int, hidden: int, scale: float = 16.0) -> None:
        super().__init__()
        self.net = (nn.Sequential(nn.Linear(dim, hidden), nn.ReLU(), nn.Linear(hidden, n_classes))
                    if hidden else nn.Linear(dim, n_classes))
        self.n_classes = n_classes
        self.scale = scale
        self.register_buffer("known", torch.zeros(n_classes, dtype=torch.bool))

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.net(self.scale * F.normalize(features, dim=1))

    @torch.no_grad()
    def probs(self, features: torch.Tensor) -> torch.Tensor:
        """Softmax over the classes consolidated so far (zero elsewhere; uniform if none yet)."""
        if not self.known.any():
            return torch.full((len(features), self.n_classes), 1.0 / self.n_classes)
        logits = self(features).masked_fill(~self.known, float("-inf"))
        return torch.softmax(logits, dim=1)

    def consolidate(self, episodic: EpisodicMemory, cfg: ConsolidationParams, generator: torch.Generator) -> None:
        if len(episodic) == 0:
            return
        teacher = copy.deepcopy(self).eval()
        old = self.known.clone()
        self.known |= torch.bincount(episodic.labels, minlength=self.n_classes) > 0
        mask = ~self.known
        optimiser = adam(self.parameters(), cfg.lr)
        t = cfg.distill_temperature
        self.train()
        for _ in range(cfg.steps):
            keys, labels = episodic.class_balanced_sample(cfg.batch_size, generator)
            logits = self(keys).masked_fill(mask, float("-inf"))
            loss = F.cross_entropy(logits, labels)
            if old.any() and cfg.distill_weight > 0:
                with torch.no_grad():
                    target = torch.softmax(teacher(keys)[:, old] / t, dim=1)
                student = torch.log_softmax(self(keys)[:, old] / t, dim=1)
                loss = loss + cfg.distill_weight * t * t * F.kl_div(student, target, reduction="batchmean")
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
        self.eval()

    def n_params(self) -> int:
        return sum(p.numel() for p in self.parameters())
