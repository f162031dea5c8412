"""Test 5 protocol data: its params, the recall stream (cues, corrupted queries, random targets),
and what one learner's recall run returns. See `dualmem.evals.recall` for the protocol."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import torch

from dualmem.core.params import Section
from dualmem.core.seeding import derive_seed, seeded_generator
from dualmem.data.prepared import Images


@dataclass(frozen=True)
class RecallParams:
    sizes: list[int]  # stream lengths N, sorted
    n_targets: int
    noise_std: float
    dropout: float
    k: int  # episodic readout neighbours
    candidates: int  # bf16 shortlist size re-ranked in float32; 0 = exact float32 search
    age_bins: int
    query_batch: int
    online_batch_size: int
    online_lr: float
    offline_epochs: int
    offline_batch_size: int
    offline_min_steps: int
    offline_lr: float

    @classmethod
    def from_params(cls, params: dict) -> RecallParams:
        s = Section.of(params, "evaluate_recall")
        online, offline = s.section("online"), s.section("offline")
        return cls(
            sizes=sorted(s.int_list("sizes", minimum=1)),
            n_targets=s.integer("n_targets", minimum=2),
            noise_std=s.number("noise_std", minimum=0.0),
            dropout=s.number("dropout", minimum=0.0, maximum=1.0),
            k=s.integer("k", minimum=1),
            candidates=s.integer("candidates", minimum=0),
            age_bins=s.integer("age_bins", minimum=1),
            query_batch=s.integer("query_batch", minimum=1),
            online_batch_size=online.integer("batch_size", minimum=1),
            online_lr=online.number("lr", minimum=0.0),
            offline_epochs=offline.integer("epochs", minimum=1),
            offline_batch_size=offline.integer("batch_size", minimum=1),
            offline_min_steps=offline.integer("min_steps", minimum=0),
            offline_lr=offline.number("lr", minimum=0.0),
        )

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass
class RecallStream:
    seed: int
    ids: np.ndarray  # rows of the training set, in stream order
    cues: torch.Tensor
    queries: torch.Tensor  # the corrupted cues
    targets: torch.Tensor
    sizes: list[int]  # capped at the available items, sorted, unique

    @property
    def n_max(self) -> int:
        return self.sizes[-1]


@dataclass
class RecallOutcome:
    recall: dict[int, float]  # N -> recall@N
    correct: np.ndarray  # per item of the largest N: was its target recalled
    bytes_per_item: float
    query_us: float  # microseconds per query item (timed, never asserted)


MASK_ROWS = 4096  # the dropout mask is drawn this many rows at a time: the same draws as one call


def corrupt(x: torch.Tensor, noise_std: float, dropout: float,
            generator: torch.Generator) -> torch.Tensor:
    """Gaussian noise, clipped to [0, 1], then a random `dropout` fraction of pixels set to 0. One
    N x 784 buffer, worked in place."""
    noisy = torch.randn(x.shape, generator=generator).mul_(noise_std).add_(x).clamp_(0.0, 1.0)
    for rows in torch.split(noisy, MASK_ROWS):
        rows.mul_(torch.rand(rows.shape, generator=generator) >= dropout)
    return noisy


def make_recall_stream(x_train: Images, cfg: RecallParams, seed: int,
                       notes: list[str] | None = None) -> RecallStream:
    n_avail = len(x_train)
    sizes = sorted({min(n, n_avail) for n in cfg.sizes})
    if sizes[-1] < max(cfg.sizes) and notes is not None:
        note = f"N capped at {n_avail}, the number of available training images"
        if note not in notes:
            notes.append(note)
    rng = np.random.default_rng(derive_seed("recall-stream", seed))
    ids = rng.permutation(n_avail)[: sizes[-1]]
    targets = torch.from_numpy(rng.integers(0, cfg.n_targets, len(ids))).long()
    cues = x_train[torch.from_numpy(ids)]
    queries = corrupt(cues, cfg.noise_std, cfg.dropout, seeded_generator("recall-corrupt", seed))
    return RecallStream(seed, ids, cues, queries, targets, sizes)
