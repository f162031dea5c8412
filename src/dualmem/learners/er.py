"""`er`: Experience Replay with a reservoir buffer (Chaudhry et al. 2019, "On Tiny Episodic Memories in
Continual Learning"; Mammoth's `models/er.py`).

Each step trains on the stream batch concatenated with a replay minibatch drawn uniformly (without
replacement) from the buffer, one cross-entropy over both, then offers the stream batch to the buffer
(reservoir sampling, every stream item offered once whatever the epochs). The buffer holds as many raw
items (uint8 image + int64 label) as the memory budget buys.

Prediction (class-incremental): argmax of the single linear head over all classes (softmax of its logits),
on the encoder it trains; replayed items only shape the training.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch.nn import functional as F

from dualmem.learners.common.base import LearnerContext, parameter_cost
from dualmem.learners.common.buffer import Buffer
from dualmem.learners.common.head import HeadConfig, HeadLearner
from dualmem.params import param
from dualmem.seeding import seeded_generator


@dataclass(frozen=True)
class ErConfig(HeadConfig):
    # replay minibatch per step; Mammoth's best args use minibatch_size = batch_size (seq-mnist, perm-mnist)
    replay_batch_size: int = param(minimum=1)


class ErLearner(HeadLearner):
    name = "er"
    Config = ErConfig

    def __init__(self, cfg: ErConfig, ctx: LearnerContext) -> None:
        super().__init__(cfg, ctx)
        self.buffer = Buffer(ctx, self.name, "reservoir")
        self.replay_rng = seeded_generator(self.name, "replay", ctx.seed)

    def observe(self, x: torch.Tensor, y: torch.Tensor, ids: np.ndarray) -> None:
        rows = self.buffer.sample(self.cfg.replay_batch_size, self.replay_rng)
        if len(rows):
            x = torch.cat([x, self.buffer.x(rows)])
            targets = torch.cat([y, self.buffer.labels[rows]])
        else:
            targets = y
        self.step(F.cross_entropy(self.logits(x), targets), len(targets))
        self.buffer.add(ids, y)

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "buffer": self.buffer.state_dict(), "replay_rng": self.replay_rng.get_state()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self.buffer.load_state_dict(state["buffer"])
        self.replay_rng.set_state(state["replay_rng"])

    def memory_cost(self) -> dict[str, int]:
        return parameter_cost(self.encoder, self.head, items=len(self.buffer), item_bytes=self.buffer.nbytes())
