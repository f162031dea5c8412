"""`ewc`: online EWC (Schwarz et al. 2018) — after the general domain (at the start) and after each domain,
a diagonal Fisher from `fisher_batches` batches of that domain (squared gradients of the batch loss) is
added to the running one (decay `gamma`), and the parameters are anchored there; the loss adds
(lam / 2) * sum F (theta - theta*)^2."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from dualmem.core.params import param
from dualmem.core.seeding import seeded_generator
from dualmem.lm.model import window_losses
from dualmem.lm.text_learner import Domain, TextContext, TextLearner


@dataclass(frozen=True)
class EwcConfig:
    lam: float = param(10000.0, minimum=0.0)
    gamma: float = param(1.0, minimum=0.0, maximum=1.0)
    fisher_batches: int = param(20, minimum=1)


class TextEwc(TextLearner):
    name = "ewc"
    Config = EwcConfig

    def __init__(self, cfg: EwcConfig, ctx: TextContext) -> None:
        super().__init__(cfg, ctx)
        self.fisher = [torch.zeros_like(p) for p in self.model.parameters()]
        self.anchor = [p.detach().clone() for p in self.model.parameters()]

    def start(self, general: Domain) -> None:
        super().start(general)
        self.consolidate(general)

    def after_domain(self, domain: Domain) -> None:
        super().after_domain(domain)
        self.consolidate(domain)

    def consolidate(self, domain: Domain) -> None:
        generator = seeded_generator("lm-fisher", self.ctx.seed, domain.index)
        params = list(self.model.parameters())
        new = [torch.zeros_like(p) for p in params]
        for _ in range(self.cfg.fisher_batches):
            batch = domain.windows(self.ctx.training.batch_size, self.context, generator)
            grads = torch.autograd.grad(window_losses(self.model, batch).mean(), params)
            for f, g in zip(new, grads, strict=True):
                f += g.detach() ** 2 / self.cfg.fisher_batches
        self.fisher = [self.cfg.gamma * f + n for f, n in zip(self.fisher, new, strict=True)]
        self.anchor = [p.detach().clone() for p in params]

    def observe(self, batch: torch.Tensor, domain: int) -> None:
        penalty = sum((f * (p - a) ** 2).sum() for f, p, a in
                      zip(self.fisher, self.model.parameters(), self.anchor, strict=True))
        self.step(window_losses(self.model, batch).mean() + self.cfg.lam / 2 * penalty)

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "fisher": self.fisher, "anchor": self.anchor}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self.fisher, self.anchor = state["fisher"], state["anchor"]

    def memory_cost(self) -> dict[str, int]:
        cost = super().memory_cost()
        extra = 2 * cost["params"]  # the Fisher and the anchor
        return {**cost, "params": cost["params"] + extra, "param_bytes": cost["param_bytes"] + 4 * extra}
