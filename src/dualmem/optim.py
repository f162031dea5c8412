"""The one optimiser constructor every training loop uses, so that learners, the encoder, the
evaluations and the bare-loop reference of `throughput.py` all step the same way.

Adam with the fused CPU kernel: one pass over all parameters instead of several elementwise ops
per tensor — about 20 % off each training step of the 784-400-400 MLP on 2 cores."""

from __future__ import annotations

from collections.abc import Iterable

import torch


def adam(parameters: Iterable[torch.Tensor], lr: float) -> torch.optim.Adam:
    return torch.optim.Adam(list(parameters), lr=lr, fused=True)
