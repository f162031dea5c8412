"""`ReplayLearner`: a head-based learner with an item buffer within the memory budget and a seeded
replay generator (ER, A-GEM, DER++ build on it): the buffer, its state and its memory cost."""

from __future__ import annotations

from typing import Any, ClassVar

import torch

from dualmem.core.seeding import seeded_generator
from dualmem.learners.common.base import LearnerContext, parameter_cost
from dualmem.learners.common.buffer import Buffer
from dualmem.learners.common.head import HeadLearner


class ReplayLearner(HeadLearner):
    buffer_policy: ClassVar[str] = "reservoir"

    def __init__(self, cfg: Any, ctx: LearnerContext) -> None:
        super().__init__(cfg, ctx)
        self.buffer = Buffer(ctx, self.name, self.buffer_policy, extras=self.buffer_extras())
        self.replay_rng = seeded_generator(self.name, "replay", ctx.seed)

    def buffer_extras(self) -> dict[str, int]:
        """Float32 values stored beside each item (name -> width); none by default."""
        return {}

    def replay_rows(self, n: int) -> torch.Tensor:
        """Rows of up to n stored items, drawn uniformly without replacement."""
        return self.buffer.sample(n, self.replay_rng)

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "buffer": self.buffer.state_dict(), "replay_rng": self.replay_rng.get_state()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self.buffer.load_state_dict(state["buffer"])
        self.replay_rng.set_state(state["replay_rng"])

    def kept_items(self) -> tuple[torch.Tensor, torch.Tensor]:
        return self.buffer.ids, self.buffer.labels

    def memory_cost(self) -> dict[str, int]:
        return parameter_cost(self.encoder, self.head, items=len(self.buffer), item_bytes=self.buffer.nbytes())
