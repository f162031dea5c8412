"""Training throughput against a bare PyTorch loop: the same network shape (the stream's encoder plus a
linear head), Adam, cross-entropy, the same batch size, on random inputs — what a learner's sample-steps
would cost with no method around them. The ratio (learner samples/s ÷ bare samples/s) holds on a noisy
machine better than either number alone."""

from __future__ import annotations

import copy
import time

import torch
from torch import nn
from torch.nn import functional as F

from dualmem.core.optim import adam
from dualmem.core.seeding import seeded_generator
from dualmem.encoders import Encoder


def bare_samples_per_second(encoder: Encoder, n_classes: int, batch_size: int, steps: int = 100) -> float:
    """Samples per second of a bare Adam + cross-entropy loop on a copy of `encoder` with a new head."""
    net = copy.deepcopy(encoder).train()
    head = nn.Linear(net.out_dim, n_classes)
    optimiser = adam([*net.parameters(), *head.parameters()], 1e-3)
    generator = seeded_generator("bare-loop")
    x = torch.rand(batch_size, encoder.n_in, generator=generator)
    y = torch.randint(0, n_classes, (batch_size,), generator=generator)
    for warmup in (True, False):
        start = time.perf_counter()
        for _ in range(10 if warmup else steps):
            loss = F.cross_entropy(head(net(x)), y)
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
    return steps * batch_size / (time.perf_counter() - start)
