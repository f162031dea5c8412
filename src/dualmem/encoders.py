"""The MLP encoder and its training under the leakage rule.

Protocol modes (params `encoder.mode`):
- `first_task`: trained, supervised, on the first task of the stream only — data every learner is
  allowed to have seen before the stream starts;
- `random`: a randomly initialised, untrained encoder.
Either way, no encoder parameter is ever fit on a class the stream has not revealed.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import nn
from torch.nn import functional as F
from tqdm import tqdm

from dualmem.core.errors import LeakageError
from dualmem.core.integrity import read_checked, rerun_fix, write_checked
from dualmem.core.optim import adam
from dualmem.core.params import Section
from dualmem.core.seeding import derive_seed, seeded_generator
from dualmem.data.stream import Stream

ENCODER_MODES = ("first_task", "random")
ENCODE_BATCH = 4096  # rows per forward pass when encoding a whole set (one batch of this size = the same numbers)


@dataclass(frozen=True)
class EncoderParams:
    hidden: list[int]
    mode: str
    epochs: int
    lr: float
    batch_size: int

    @classmethod
    def from_params(cls, params: dict) -> EncoderParams:
        s = Section.of(params, "encoder")
        return cls(
            hidden=s.int_list("hidden", minimum=1, unique=False),
            mode=s.choice("mode", ENCODER_MODES),
            epochs=s.integer("epochs", minimum=1),
            lr=s.number("lr", minimum=0.0),
            batch_size=s.integer("batch_size", minimum=1),
        )


class Encoder(nn.Module):
    """784-400-400 ReLU MLP by default; `out_dim` is the width of the last hidden layer."""

    def __init__(self, n_in: int, hidden: list[int]) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        width = n_in
        for h in hidden:
            layers += [nn.Linear(width, h), nn.ReLU()]
            width = h
        self.net = nn.Sequential(*layers)
        self.n_in = n_in
        self.hidden = list(hidden)
        self.out_dim = width

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    @torch.no_grad()
    def encode(self, x: torch.Tensor, batch_size: int = ENCODE_BATCH) -> torch.Tensor:
        was_training = self.training
        self.eval()
        out = torch.cat([self(x[i : i + batch_size]) for i in range(0, len(x), batch_size)]) if len(x) else \
            torch.empty(0, self.out_dim)
        self.train(was_training)
        return out


def random_affine(x: torch.Tensor, generator: torch.Generator, degrees: float = 12.0, scale: float = 0.1,
                  shift: float = 0.09) -> torch.Tensor:
    """Square images (flat rows) under a random rotation (+-degrees), zoom (1 +- scale) and shift
    (+- shift of the side) each — the augmentation of encoder training. It is not Test 5's cue
    corruption (pixel noise and dropout), so training on it does not teach to that test."""
    n, n_pixels = x.shape
    side = math.isqrt(n_pixels)
    if side * side != n_pixels:
        raise ValueError(f"random_affine needs square images, got {n_pixels} pixels")
    angle = (torch.rand(n, generator=generator) * 2 - 1) * math.radians(degrees)
    zoom = 1 + (torch.rand(n, generator=generator) * 2 - 1) * scale
    move = (torch.rand(n, 2, generator=generator) * 2 - 1) * 2 * shift
    cos, sin = torch.cos(angle) / zoom, torch.sin(angle) / zoom
    theta = torch.stack([torch.stack([cos, -sin, move[:, 0]], 1), torch.stack([sin, cos, move[:, 1]], 1)], 1)
    grid = affine_sampling_grid(theta, side)
    return F.grid_sample(x.view(n, 1, side, side), grid, align_corners=False, padding_mode="zeros").view(n, n_pixels)


def affine_sampling_grid(theta: torch.Tensor, side: int) -> torch.Tensor:
    """F.affine_grid(theta, (n, 1, side, side), align_corners=False), elementwise: x t0 + y t1 + t2 in the
    order its batched matrix product sums them (bitwise equal here), a third of its time (its bmm of 3-wide
    rows was an eighth of a sleep)."""
    line = torch.linspace(-1, 1, side) * (side - 1) / side  # pixel centres, as affine_grid places them
    x, y = line.repeat(side), line.repeat_interleave(side)  # x runs along a row
    rows = [x * theta[:, i, 0:1] + y * theta[:, i, 1:2] + theta[:, i, 2:3] for i in (0, 1)]
    return torch.stack(rows, -1).view(len(theta), side, side, 2)


def new_encoder(n_in: int, hidden: list[int], *seed_parts: object) -> Encoder:
    torch.manual_seed(derive_seed("encoder-init", *seed_parts))
    return Encoder(n_in, hidden)


def check_classes(y: torch.Tensor, allowed: set[int], who: str) -> None:
    seen = set(torch.unique(y).tolist())
    if not seen <= allowed:
        raise LeakageError(f"{who} was given classes {sorted(seen - allowed)} before the protocol reveals them")


def fit_encoder(
    encoder: Encoder,
    x: torch.Tensor,
    y: torch.Tensor,
    allowed_classes: set[int],
    cfg: EncoderParams,
    seed: int,
    progress: bool = True,
) -> None:
    """Supervised training with a throw-away head over the allowed classes only."""
    check_classes(y, allowed_classes, "encoder training")
    classes = sorted(allowed_classes)
    remap = torch.full((int(max(classes)) + 1,), -1, dtype=torch.long)
    remap[torch.tensor(classes)] = torch.arange(len(classes))
    head = nn.Linear(encoder.out_dim, len(classes))
    optimiser = adam([*encoder.parameters(), *head.parameters()], cfg.lr)
    generator = seeded_generator("encoder-batches", seed)
    encoder.train()
    for _ in tqdm(range(cfg.epochs), desc="encoder", disable=not progress, leave=False):
        order = torch.randperm(len(y), generator=generator)
        for start in range(0, len(order), cfg.batch_size):
            rows = order[start : start + cfg.batch_size]
            loss = nn.functional.cross_entropy(head(encoder(x[rows])), remap[y[rows]])
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
    encoder.eval()


def train_stream_encoder(stream: Stream, cfg: EncoderParams, progress: bool = True) -> tuple[Encoder, list[int]]:
    """The encoder a stream's learners start from, and the classes it was fit on."""
    encoder = new_encoder(stream.dataset.n_features, cfg.hidden, stream.name, stream.seed)
    if cfg.mode == "random":
        return encoder.eval(), []
    first = stream.task(0)
    fit_encoder(encoder, first.x, first.y, set(first.classes), cfg, stream.seed, progress)
    return encoder, list(first.classes)


def save_encoder(encoder: Encoder, fitted_classes: list[int], cfg: EncoderParams, path: Path) -> None:
    """The encoder checkpoint at `path`, and its sha256 beside it."""
    payload = {
        "state": encoder.state_dict(),
        "n_in": encoder.n_in,
        "hidden": encoder.hidden,
        "fitted_classes": fitted_classes,
        "params": asdict(cfg),
    }
    write_checked(path, lambda out: torch.save(payload, out))


def encoder_stage(path: Path) -> str:
    """The DVC stage that writes the encoder checkpoint at `path` (models/<stream>/encoder/seed_<s>.pt)."""
    if path.parent.name != "encoder":
        return f"<the train_encoder stage that writes {path.parent}>"
    return f"train_encoder@{path.parent.parent.name}"


def load_encoder(path: Path) -> tuple[Encoder, list[int]]:
    from dualmem.core.errors import DataError

    if not path.exists():
        raise DataError(f"encoder {path} is missing; fix: run `dvc repro train_encoder`")
    payload = torch.load(read_checked(path, rerun_fix(encoder_stage(path))), weights_only=True)
    encoder = Encoder(payload["n_in"], payload["hidden"])
    encoder.load_state_dict(payload["state"])
    return encoder.eval(), list(payload["fitted_classes"])
