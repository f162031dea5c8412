"""Continual-learning metrics on an accuracy matrix R, where R[i, j] is the test accuracy on task j
after learning task i (T tasks; indices from 0, so the last row is R[T-1])."""

from __future__ import annotations

import numpy as np


def _square(R: np.ndarray) -> np.ndarray:
    R = np.asarray(R, dtype=float)
    if R.ndim != 2 or R.shape[0] != R.shape[1] or R.shape[0] < 1:
        raise ValueError(f"accuracy matrix must be square and non-empty, got shape {R.shape}")
    return R


def final_average_accuracy(R: np.ndarray) -> float:
    R = _square(R)
    return float(R[-1].mean())


def retention(R: np.ndarray) -> float:
    """Mean over earlier tasks j < T of R[T, j] / R[j, j]: the share of just-learned accuracy kept."""
    R = _square(R)
    T = R.shape[0]
    if T < 2:
        return float("nan")
    ratios = [R[-1, j] / R[j, j] if R[j, j] > 0 else 0.0 for j in range(T - 1)]
    return float(np.mean(ratios))


def backward_transfer(R: np.ndarray) -> float:
    """Mean over j < T of R[T, j] - R[j, j] (Lopez-Paz & Ranzato 2017); negative = forgetting."""
    R = _square(R)
    T = R.shape[0]
    if T < 2:
        return float("nan")
    return float(np.mean([R[-1, j] - R[j, j] for j in range(T - 1)]))


def forgetting(R: np.ndarray) -> float:
    """Mean over j < T of max_{i < T} R[i, j] - R[T, j] (Chaudhry et al. 2018)."""
    R = _square(R)
    T = R.shape[0]
    if T < 2:
        return float("nan")
    return float(np.mean([R[j : T - 1, j].max() - R[-1, j] for j in range(T - 1)]))


def average_accuracy_curve(R: np.ndarray) -> np.ndarray:
    """Mean accuracy over the tasks seen so far, after each task."""
    R = _square(R)
    return np.array([R[i, : i + 1].mean() for i in range(R.shape[0])])


def continual_metrics(R: np.ndarray) -> dict[str, float]:
    return {
        "final_accuracy": final_average_accuracy(R),
        "retention": retention(R),
        "forgetting": forgetting(R),
        "backward_transfer": backward_transfer(R),
    }
