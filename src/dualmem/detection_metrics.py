"""Detection metrics for Test 3 (novelty detection).

Convention: the POSITIVE class is "novel" (label 1), the negative class is "familiar" (label 0),
and a HIGHER score means MORE novel. So AUROC is the probability that a random novel item scores
above a random familiar one (ties count half), and FPR@95%TPR is the share of familiar items flagged
as novel at the threshold that flags 95% of the novel items.
"""

from __future__ import annotations

import math

import numpy as np


def _check(y_true: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    y = np.asarray(y_true).astype(int).ravel()
    s = np.asarray(scores, dtype=float).ravel()
    if y.shape != s.shape:
        raise ValueError(f"labels and scores differ in length: {y.shape} vs {s.shape}")
    if not set(np.unique(y)) <= {0, 1}:
        raise ValueError("labels must be 0 (familiar) or 1 (novel)")
    if not (y == 1).any() or not (y == 0).any():
        raise ValueError("need at least one novel (1) and one familiar (0) item")
    if not np.isfinite(s).all():
        raise ValueError("scores must be finite")
    return y, s


def roc_counts(y: np.ndarray, s: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(false positives, true positives) at every distinct threshold, from (0, 0) to (N, P), as
    integers; tied scores move both at once."""
    order = np.argsort(-s, kind="mergesort")
    s_sorted, y_sorted = s[order], y[order]
    last_of_each = np.r_[np.flatnonzero(np.diff(s_sorted)), len(s_sorted) - 1]
    tps = np.r_[0, np.cumsum(y_sorted)[last_of_each]]
    return np.r_[0, last_of_each + 1] - tps, tps


def roc_curve(y: np.ndarray, s: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(fpr, tpr) at every distinct threshold, from (0, 0) to (1, 1)."""
    fps, tps = roc_counts(y, s)
    return fps / fps[-1], tps / tps[-1]


def auroc(y_true: np.ndarray, scores: np.ndarray) -> float:
    """Area under the ROC curve, novel = positive, higher score = more novel (ties count half): the
    Mann-Whitney U from integer counts, divided once (exactly 1.0 for a perfect scorer)."""
    fps, tps = roc_counts(*_check(y_true, scores))
    return float(np.sum(np.diff(fps) * (tps[1:] + tps[:-1])) / (2 * tps[-1] * fps[-1]))


def fpr_at_tpr(y_true: np.ndarray, scores: np.ndarray, tpr: float = 0.95) -> float:
    """False-positive rate at the highest threshold whose true-positive rate is >= `tpr`.

    The threshold t is the ceil(tpr * P)-th largest novel score; an item is flagged novel when its
    score is >= t. Returns the share of familiar items with score >= t.
    """
    if not 0.0 < tpr <= 1.0:
        raise ValueError(f"tpr must be in (0, 1], got {tpr}")
    y, s = _check(y_true, scores)
    positives = np.sort(s[y == 1])[::-1]
    needed = max(1, math.ceil(tpr * len(positives) - 1e-9))
    threshold = positives[needed - 1]
    return float((s[y == 0] >= threshold).mean())


def roc_points(y_true: np.ndarray, scores: np.ndarray, max_points: int = 200
               ) -> dict[str, list[float]]:
    """The ROC curve (fpr, tpr), downsampled to at most `max_points` points (ends kept)."""
    fpr, tpr = roc_curve(*_check(y_true, scores))
    if len(fpr) > 2:  # drop the points on a straight segment between their neighbours
        bends = np.r_[True, (np.diff(fpr, 2) != 0) | (np.diff(tpr, 2) != 0), True]
        fpr, tpr = fpr[bends], tpr[bends]
    if len(fpr) > max_points:
        keep = np.unique(np.linspace(0, len(fpr) - 1, max_points).round().astype(int))
        fpr, tpr = fpr[keep], tpr[keep]
    return {"fpr": [round(float(v), 5) for v in fpr], "tpr": [round(float(v), 5) for v in tpr]}


def mean_roc(curves: list[dict[str, list[float]]], grid_size: int = 101) -> dict[str, list[float]]:
    """Vertical average of ROC curves (mean TPR at a common FPR grid), e.g. over seeds."""
    grid = np.linspace(0.0, 1.0, grid_size)
    tprs = [np.interp(grid, c["fpr"], c["tpr"]) for c in curves]
    return {"fpr": grid.round(5).tolist(), "tpr": np.mean(tprs, axis=0).round(5).tolist()}


def detection_metrics(familiar: np.ndarray, novel: np.ndarray, tpr: float = 0.95
                      ) -> dict[str, float]:
    """AUROC and FPR@tpr from the scores of familiar and novel items."""
    familiar, novel = np.asarray(familiar, dtype=float), np.asarray(novel, dtype=float)
    y = np.concatenate([np.zeros(len(familiar), int), np.ones(len(novel), int)])
    s = np.concatenate([familiar, novel])
    return {"auroc": auroc(y, s), "fpr_at_tpr": fpr_at_tpr(y, s, tpr)}
