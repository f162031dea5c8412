"""`agem`: Averaged Gradient Episodic Memory (Chaudhry et al. 2019, "Efficient Lifelong Learning with
A-GEM"), with a reservoir buffer (Mammoth's `agem_r` variant: the memory is filled online by reservoir
sampling rather than per task at its end).

Each step computes the stream-batch gradient g and a reference gradient g_ref on a replay minibatch drawn
uniformly from the buffer, both flattened over all parameters. If g·g_ref < 0 the update would increase
the average loss on the memory, so g is projected: g <- g - (g·g_ref / g_ref·g_ref) g_ref; the optimiser
then steps on g. The stream batch is then offered to the buffer (raw items, as many as the memory budget
buys).

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
class AgemConfig(HeadConfig):
    # reference minibatch per step; Mammoth's best args for agem / agem_r use minibatch_size 128 (seq-mnist)
    replay_batch_size: int = param(minimum=1)


def project(g: torch.Tensor, g_ref: torch.Tensor) -> torch.Tensor:
    """A-GEM's projection of the flat gradient g against the flat reference gradient g_ref: unchanged
    when g·g_ref >= 0, else its component along g_ref removed (branch-free)."""
    dot = torch.dot(g, g_ref)
    return g - (dot.clamp(max=0.0) / torch.dot(g_ref, g_ref).clamp_min(1e-20)) * g_ref


class AgemLearner(ReplayLearner):
    name = "agem"
    Config = AgemConfig

    def observe(self, x: torch.Tensor, y: torch.Tensor, ids: np.ndarray) -> None:
        rows = self.replay_rows(self.cfg.replay_batch_size)
        if len(rows) == 0:
            self.step(F.cross_entropy(self.logits(x), y), len(y))
        else:
            # two forward passes (not one over the concatenation): each backward then runs over its own rows only
            g = self.flat_gradient(F.cross_entropy(self.logits(x), y))
            g_ref = self.flat_gradient(F.cross_entropy(self.logits(self.buffer.x(rows)), self.buffer.labels[rows]))
            self.apply_gradient(project(g, g_ref), len(y) + len(rows))
        self.buffer.add(ids, y)

    def flat_gradient(self, loss: torch.Tensor) -> torch.Tensor:
        """d loss / d parameters, flattened into one vector over `self.parameters()`."""
        return torch.cat([t.flatten() for t in torch.autograd.grad(loss, self.parameters())])

    def apply_gradient(self, flat: torch.Tensor, n_samples: int) -> None:
        """One optimiser step on a given flat gradient over `self.parameters()`."""
        assert self.optimiser is not None, "observe() outside a task"
        params = self.parameters()
        for p, g in zip(params, flat.split([p.numel() for p in params]), strict=True):
            p.grad = g.view_as(p)
        self.optimiser.step()
        self.samples_trained += n_samples
