"""`derpp`: DER++ (Buzzega et al. 2020, "Dark Experience for General Continual Learning"; Mammoth's
`models/derpp.py`).

The reservoir buffer stores, with each raw item, the network's logits over all classes at the time the item
was offered (the stream batch's own forward pass, before the step; charged as n_classes float32 per item).
Each step: loss = CE(stream batch) + alpha · MSE(logits(x1), stored logits1) + beta · CE(logits(x2), y2),
with two independent replay minibatches (x1, x2) drawn uniformly from the buffer; all three go through one
forward pass. Then the stream batch (with its logits) is offered to the buffer.

Prediction (class-incremental): argmax of the single linear head over all classes (softmax of its logits).
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
class DerppConfig(HeadConfig):
    replay_batch_size: int = param(minimum=1)  # size of each of the two replay minibatches
    alpha: float = param(minimum=0.0)  # weight of the logit-matching (MSE) term; Mammoth seq-mnist, buffer 5120: 0.2
    beta: float = param(minimum=0.0)  # weight of the replayed-label CE term; Mammoth seq-mnist, buffer 5120: 0.5


class DerppLearner(ReplayLearner):
    name = "derpp"
    Config = DerppConfig

    def buffer_extras(self) -> dict[str, int]:
        return {"logits": self.ctx.n_classes}

    def observe(self, x: torch.Tensor, y: torch.Tensor, ids: np.ndarray) -> None:
        n = len(y)
        rows1 = self.replay_rows(self.cfg.replay_batch_size)
        rows2 = self.replay_rows(self.cfg.replay_batch_size)
        m1 = len(rows1)
        out = self.logits(torch.cat([x, self.buffer.x(rows1), self.buffer.x(rows2)]))
        loss = F.cross_entropy(out[:n], y)
        if m1:
            loss = loss + self.cfg.alpha * F.mse_loss(out[n : n + m1], self.buffer.extras["logits"][rows1])
            loss = loss + self.cfg.beta * F.cross_entropy(out[n + m1 :], self.buffer.labels[rows2])
        stream_logits = out[:n].detach()
        self.step(loss, len(out))
        self.buffer.add(ids, y, logits=stream_logits)
