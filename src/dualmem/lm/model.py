"""A small byte-level causal transformer (vocabulary 256) on CPU, with optional low-rank adapters.

Pre-LayerNorm blocks (causal multi-head self-attention, 4x GELU MLP), learned positions, output layer tied
to the byte embedding. `forward(x, adapters)` adds the low-rank updates of one `Adapters` set to every
linear layer of the blocks (LoRA, Hu et al. 2021) — the base weights stay as they are.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
from torch import nn
from torch.nn import functional as F

from dualmem.core.errors import ParamsError
from dualmem.core.params import Section

VOCAB = 256
LINEARS = ("qkv", "proj", "fc1", "fc2")


@dataclass(frozen=True)
class ModelParams:
    layers: int
    width: int
    heads: int
    context: int

    @classmethod
    def from_params(cls, params: dict) -> ModelParams:
        s = Section.of(params, "lm.model")
        width, heads = s.integer("width", minimum=8), s.integer("heads", minimum=1)
        if width % heads:
            raise ParamsError("lm.model.heads", f"is {heads}, which does not divide width {width}",
                              "use a divisor of lm.model.width")
        return cls(s.integer("layers", minimum=1), width, heads, s.integer("context", minimum=8))

    def as_dict(self) -> dict:
        return asdict(self)


class Block(nn.Module):
    def __init__(self, width: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.ln1, self.ln2 = nn.LayerNorm(width), nn.LayerNorm(width)
        self.qkv, self.proj = nn.Linear(width, 3 * width), nn.Linear(width, width)
        self.fc1, self.fc2 = nn.Linear(width, 4 * width), nn.Linear(4 * width, width)

    def linear(self, name: str, x: torch.Tensor, adapters: Adapters | None, layer: int) -> torch.Tensor:
        out = getattr(self, name)(x)
        return out if adapters is None else out + adapters.delta(layer, name, x)

    def forward(self, x: torch.Tensor, adapters: Adapters | None, layer: int) -> torch.Tensor:
        n, t, d = x.shape
        q, k, v = self.linear("qkv", self.ln1(x), adapters, layer).split(d, dim=2)
        q, k, v = (z.view(n, t, self.heads, d // self.heads).transpose(1, 2) for z in (q, k, v))
        attended = F.scaled_dot_product_attention(q, k, v, is_causal=True).transpose(1, 2).reshape(n, t, d)
        x = x + self.linear("proj", attended, adapters, layer)
        hidden = F.gelu(self.linear("fc1", self.ln2(x), adapters, layer))
        return x + self.linear("fc2", hidden, adapters, layer)


class ByteLM(nn.Module):
    def __init__(self, cfg: ModelParams) -> None:
        super().__init__()
        self.cfg = cfg
        self.embed = nn.Embedding(VOCAB, cfg.width)
        self.position = nn.Parameter(torch.zeros(cfg.context, cfg.width))
        self.blocks = nn.ModuleList(Block(cfg.width, cfg.heads) for _ in range(cfg.layers))
        self.ln = nn.LayerNorm(cfg.width)
        nn.init.normal_(self.position, std=0.02)
        nn.init.normal_(self.embed.weight, std=0.02)

    def hidden(self, x: torch.Tensor, adapters: Adapters | None = None) -> torch.Tensor:
        """(n, t) bytes -> (n, t, width): the state each position's next byte is read from."""
        h = self.embed(x.long()) + self.position[: x.shape[1]]
        for layer, block in enumerate(self.blocks):
            h = block(h, adapters, layer)
        return self.ln(h)

    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        return hidden @ self.embed.weight.T

    def forward(self, x: torch.Tensor, adapters: Adapters | None = None) -> torch.Tensor:
        return self.logits(self.hidden(x, adapters))


class Adapters(nn.Module):
    """One set of low-rank updates, delta W = (alpha / rank) B A, for every linear layer of the blocks;
    B starts at zero, so a fresh set leaves the base model unchanged."""

    def __init__(self, model: ByteLM, rank: int, alpha: float) -> None:
        super().__init__()
        self.scale = alpha / rank
        self.a = nn.ParameterDict()
        self.b = nn.ParameterDict()
        for layer, block in enumerate(model.blocks):
            for name in LINEARS:
                lin: nn.Linear = getattr(block, name)
                key = f"{layer}_{name}"
                self.a[key] = nn.Parameter(torch.randn(rank, lin.in_features) / math.sqrt(lin.in_features))
                self.b[key] = nn.Parameter(torch.zeros(lin.out_features, rank))

    def delta(self, layer: int, name: str, x: torch.Tensor) -> torch.Tensor:
        key = f"{layer}_{name}"
        return self.scale * (x @ self.a[key].T) @ self.b[key].T


def window_losses(model: ByteLM, windows: torch.Tensor, adapters: Adapters | None = None) -> torch.Tensor:
    """(n, t + 1) bytes -> (n, t) cross-entropy in nats of each next byte given the bytes before it."""
    logits = model(windows[:, :-1], adapters)
    return F.cross_entropy(logits.flatten(0, 1), windows[:, 1:].long().flatten(), reduction="none").view(
        len(windows), -1)


def n_params(*modules: nn.Module) -> int:
    return sum(p.numel() for m in modules for p in m.parameters())
