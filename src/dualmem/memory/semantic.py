"""Slow semantic memory: a cosine classifier on encoder features, trained only by consolidation (the
dual-memory learner's sleep: interleaved, class-balanced replay of stored items, distilled toward its
outputs from before that sleep). `known` marks the classes it has been consolidated on."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F


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

    def n_params(self) -> int:
        return sum(p.numel() for p in self.parameters())
