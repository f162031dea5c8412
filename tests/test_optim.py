"""The project's Adam is torch.optim.Adam(fused=True), bitwise, without its start-up cost."""

from __future__ import annotations

import subprocess
import sys

import torch
from torch import nn
from torch.nn import functional as F

from dualmem.core.optim import Adam


def train(make_optimiser, steps: int = 25) -> list[torch.Tensor]:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(20, 16), nn.ReLU(), nn.Linear(16, 5))
    frozen_head = nn.Linear(5, 3)  # its parameters are in the optimiser but never get a gradient
    optimiser = make_optimiser([*net.parameters(), *frozen_head.parameters()])
    x, y = torch.randn(64, 20), torch.randint(0, 5, (64,))
    for step in range(steps):
        if step == 10:  # a schedule: the learning rate changed between steps
            for group in optimiser.param_groups:
                group["lr"] = 0.003
        optimiser.zero_grad()
        F.cross_entropy(net(x), y).backward()
        optimiser.step()
    return [p.detach().clone() for p in [*net.parameters(), *frozen_head.parameters()]]


def test_adam_is_bitwise_torchs_fused_adam() -> None:
    ours = train(lambda ps: Adam(ps, lr=0.01))
    torchs = train(lambda ps: torch.optim.Adam(ps, lr=0.01, fused=True))
    assert all(torch.equal(a, b) for a, b in zip(ours, torchs, strict=True))
    # positive control: another eps gives other parameters, so the equality above is not vacuous
    other = train(lambda ps: torch.optim.Adam(ps, lr=0.01, eps=1e-6))
    assert not all(torch.equal(a, b) for a, b in zip(ours, other, strict=True))


def test_training_and_determinism_do_not_import_the_compiler() -> None:
    code = ("import sys, torch\n"
            "from dualmem.core.optim import adam\n"
            "from dualmem.core.seeding import set_global_determinism\n"
            "set_global_determinism()\n"
            "assert torch.are_deterministic_algorithms_enabled()\n"
            "p = torch.zeros(3, requires_grad=True)\n"
            "o = adam([p], 0.1)\n"
            "o.zero_grad(); (p ** 2).sum().backward(); o.step()\n"
            "print('torch._dynamo' in sys.modules)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"
