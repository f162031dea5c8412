"""`lora`: one set of low-rank adapters per domain on the frozen base (Hu et al. 2021); the base itself
is never trained. Choosing the adapter at test time (no domain label): for each evaluation window, the
base and every domain's adapter set score the window's first `select_bytes` bytes, and the one with the
lowest loss there scores the rest of the window — the evaluation's warm-up prefix, which is never scored."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from dualmem.core.params import param
from dualmem.core.seeding import derive_seed
from dualmem.lm.model import Adapters, n_params, window_losses
from dualmem.lm.text_learner import Domain, TextContext, TextLearner


@dataclass(frozen=True)
class LoraConfig:
    rank: int = param(8, minimum=1)
    alpha: float = param(16.0, minimum=0.0)
    select_bytes: int = param(32, minimum=1)  # leading bytes of a window that choose its adapter set


class TextLora(TextLearner):
    name = "lora"
    Config = LoraConfig

    def __init__(self, cfg: LoraConfig, ctx: TextContext) -> None:
        super().__init__(cfg, ctx)
        self.model.requires_grad_(False)
        self.adapters = torch.nn.ModuleList()

    def before_domain(self, domain: Domain) -> None:
        torch.manual_seed(derive_seed("lm-lora", self.ctx.seed, domain.index))
        self.adapters.append(Adapters(self.model, self.cfg.rank, self.cfg.alpha))
        super().before_domain(domain)

    def trainable(self) -> list[torch.nn.Parameter]:
        return list(self.adapters[-1].parameters())

    def observe(self, batch: torch.Tensor, domain: int) -> None:
        self.step(window_losses(self.model, batch, self.adapters[-1]).mean())

    @torch.no_grad()
    def window_losses(self, windows: torch.Tensor, scored_from: int = 0) -> torch.Tensor:
        options = torch.stack([window_losses(self.model, windows, a) for a in [None, *self.adapters]])
        chosen = options[:, :, : self.cfg.select_bytes].mean(2).argmin(0)
        return options[chosen, torch.arange(len(windows))]

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "adapters": [a.state_dict() for a in self.adapters]}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self.adapters = torch.nn.ModuleList()
        for adapter_state in state["adapters"]:
            adapters = Adapters(self.model, self.cfg.rank, self.cfg.alpha)
            adapters.load_state_dict(adapter_state)
            self.adapters.append(adapters)

    def memory_cost(self) -> dict[str, int]:
        cost = super().memory_cost()
        extra = n_params(*self.adapters)
        return {**cost, "params": cost["params"] + extra, "param_bytes": cost["param_bytes"] + 4 * extra}
