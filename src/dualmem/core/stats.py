"""Aggregation over seeds: mean, standard deviation, SEM and a t-based 95% confidence interval,
and paired differences (the report's Gap column)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np


@dataclass(frozen=True)
class Summary:
    mean: float
    std: float
    sem: float
    ci95: float  # half-width
    n: int

    def as_dict(self) -> dict[str, float]:
        return asdict(self)


def summarize(values: Sequence[float]) -> Summary:
    x = np.asarray(values, dtype=float)
    n = len(x)
    if n == 0:
        raise ValueError("no values to summarize")
    mean = float(x.mean())
    if n == 1:
        return Summary(mean, 0.0, 0.0, float("nan"), 1)
    from scipy.special import stdtrit  # Student-t quantile; imported here: 0.4 s that most stages never need

    std = float(x.std(ddof=1))
    sem = std / np.sqrt(n)
    return Summary(mean, std, float(sem), float(stdtrit(n - 1, 0.975) * sem), n)


def paired_gap(a: Sequence[float], b: Sequence[float]) -> Summary:
    """a - b, paired element-wise (same seeds)."""
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if a.shape != b.shape:
        raise ValueError(f"paired gap needs equal-length inputs, got {a.shape} and {b.shape}")
    return summarize(a - b)
