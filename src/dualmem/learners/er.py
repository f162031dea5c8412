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

import numpy as np
import torch
from torch.nn import functional as F

from dualmem.core.params import param
from dualmem.learners.common.head import HeadConfig
from dualmem.learners.common.replay import ReplayLearner


@dataclass(frozen=True)
class ErConfig(HeadConfig):
    # replay minibatch per step; Mammoth's best args use minibatch_size = batch_size (seq-mnist, perm-mnist)
    replay_batch_size: int = param(minimum=1)


class ErLearner(ReplayLearner):
    name = "er"
    Config = ErConfig

    def observe(self, x: torch.Tensor, y: torch.Tensor, ids: np.ndarray) -> None:
        rows = self.replay_rows(self.cfg.replay_batch_size)
        if len(rows):
            x = torch.cat([x, self.buffer.x(rows)])
            targets = torch.cat([y, self.buffer.labels[rows]])
        else:
            targets = y
        self.step(F.cross_entropy(self.logits(x), targets), len(targets))
        self.buffer.add(ids, y)
