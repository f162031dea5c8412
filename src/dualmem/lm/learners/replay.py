"""`replay`: experience replay of raw text — a domain-balanced buffer of windows of every domain seen so
far (the general one included) within lm.memory_bytes; each step mixes `fraction` of replayed windows
into the batch."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from dualmem.core.params import param
from dualmem.core.seeding import seeded_generator
from dualmem.lm.model import window_losses
from dualmem.lm.text_learner import Domain, TextBuffer, TextContext, TextLearner


@dataclass(frozen=True)
class ReplayConfig:
    fraction: float = param(0.5, minimum=0.0, maximum=1.0)  # of each batch drawn from the buffer
    per_step: int = param(4, minimum=0)  # windows of the current batch written to the buffer per step


class TextReplay(TextLearner):
    name = "replay"
    Config = ReplayConfig

    def __init__(self, cfg: ReplayConfig, ctx: TextContext) -> None:
        super().__init__(cfg, ctx)
        self.buffer = TextBuffer(ctx.memory_bytes, self.context + 1)
        self.generator = seeded_generator("lm-replay", ctx.seed)

    def start(self, general: Domain) -> None:
        super().start(general)
        self.buffer.add(general.windows(self.buffer.capacity, self.context, self.generator), general.index)

    def observe(self, batch: torch.Tensor, domain: int) -> None:
        n_old = round(self.cfg.fraction * len(batch)) if len(self.buffer) else 0
        mixed = torch.cat([batch[: len(batch) - n_old], self.buffer.sample(n_old, self.generator)])
        self.step(window_losses(self.model, mixed).mean())
        self.buffer.add(batch[: self.cfg.per_step], domain)

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "buffer": self.buffer.state_dict(), "rng": self.generator.get_state()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self.buffer.load_state_dict(state["buffer"])
        self.generator.set_state(state["rng"])

    def memory_cost(self) -> dict[str, int]:
        return {**super().memory_cost(), "items": len(self.buffer), "item_bytes": self.buffer.nbytes()}
