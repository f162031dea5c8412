"""`joint`: at every step, windows drawn from every domain seen so far (the general one included) — the
upper bound that keeps all the text it has seen."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from dualmem.core.seeding import seeded_generator
from dualmem.lm.model import window_losses
from dualmem.lm.text_learner import Domain, TextContext, TextLearner


@dataclass(frozen=True)
class JointConfig:
    """No hyperparameter beyond the shared lm.finetune settings."""


class TextJoint(TextLearner):
    name = "joint"
    Config = JointConfig
    upper_bound = True

    def __init__(self, cfg: Any, ctx: TextContext) -> None:
        super().__init__(cfg, ctx)
        self.domains: dict[int, Domain] = {}

    def start(self, general: Domain) -> None:
        super().start(general)
        self.domains = {general.index: general}

    def before_domain(self, domain: Domain) -> None:
        super().before_domain(domain)
        self.domains[domain.index] = domain
        self.generator = seeded_generator("lm-joint", self.ctx.seed, domain.index)

    def observe(self, batch: torch.Tensor, domain: int) -> None:
        """The step's batch is spread evenly over the seen domains (the new domain's own windows first)."""
        seen = list(self.domains.values())
        shares = [len(batch) // len(seen) + (i < len(batch) % len(seen)) for i in range(len(seen))]
        parts = [batch[: shares[-1]]] + [d.windows(n, self.context, self.generator) for d, n in
                                         zip(seen[:-1], shares[:-1], strict=True) if n]
        self.step(window_losses(self.model, torch.cat(parts)).mean())

    def memory_cost(self) -> dict[str, int]:
        return {**super().memory_cost(), "item_bytes": sum(len(d.train) for d in self.domains.values())}
