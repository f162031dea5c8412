"""Test 5 — long-horizon recall of arbitrary associations.

Per seed, a stream of N distinct items is shown once each: cue = a training image of the main
dataset (drawn without replacement), target = one of `n_targets` labels drawn at random per item.
After the stream every cue is presented again, corrupted (Gaussian noise, clip to [0, 1], random
pixel dropout), and recall@N is the fraction of items whose target comes back. The stream for N is
the first N items of the stream for the largest N, so one pass serves every N:
- dual memory: a fresh EpisodicMemory on its frozen encoder, every item written once; its kNN
  readout (k in params) is evaluated for all prefixes from one pass of similarities (bf16 shortlist
  of `candidates` items re-ranked in float32; candidates: 0 = exact float32 search);
- online gradient learners (finetune): a copy of the post-stream encoder with a new head, trained
  online, one pass, Adam on batches of the newest items; batch boundaries fall at every N, so the
  state read at N is exactly the learner after the first N items;
- joint: the upper-bound counterpart, a copy of its encoder with a new head trained offline on all
  N items (>= `epochs` epochs and >= `min_steps` steps), separately per N; it keeps the items.
The loaded learner states are never modified (copies and fresh memories only).
"""

from __future__ import annotations

import csv
import time
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import torch
from torch.nn import functional as F
from tqdm import tqdm

from dualmem.encoders import Encoder
from dualmem.evals.recall_networks import offline_recall, online_recall
from dualmem.evals.recall_protocol import (
    RecallOutcome,
    RecallParams,
    RecallStream,
    corrupt,
    make_recall_stream,
)
from dualmem.learners import Learner
from dualmem.learners.dualmem import DualMemoryLearner
from dualmem.learners.gradient import GradientLearner
from dualmem.learners.joint import JointLearner
from dualmem.memory.episodic import EpisodicMemory
from dualmem.results import Row, TestResults
from dualmem.runner import learner_names, open_stream, post_stream_learners, stream_seeds

STREAM = "openworld"



__all__ = ["RecallParams", "corrupt", "make_recall_stream", "offline_recall", "online_recall"]


def evaluate_learner(learner: Learner, rs: RecallStream, cfg: RecallParams,
                     progress: bool = False) -> RecallOutcome:
    """Recall of one post-stream learner; reads the learner, never modifies it."""
    if isinstance(learner, DualMemoryLearner):
        epi = learner.episodic
        return episodic_recall(learner.encoder, rs, cfg, epi.temperature, epi.budget, progress)
    if isinstance(learner, JointLearner):
        return offline_recall(learner.encoder, rs, cfg, progress)
    if isinstance(learner, GradientLearner):
        return online_recall(learner.encoder, rs, cfg, progress)
    raise TypeError(f"no recall protocol for learner {learner.name!r}")


def age_curve(correct: np.ndarray, n_bins: int) -> tuple[list[int], list[float]]:
    """Recall by item age (items shown after it), youngest bin first: (bin lower ages, recall)."""
    age = len(correct) - 1 - np.arange(len(correct))
    edges = np.linspace(0, len(correct), min(n_bins, len(correct)) + 1).astype(int)
    lows, values = [], []
    for lo, hi in zip(edges[:-1], edges[1:], strict=True):
        mask = (age >= lo) & (age < hi)
        lows.append(int(lo))
        values.append(float(correct[mask].mean()) if mask.any() else float("nan"))
    return lows, values


# -- the stage's work ------------------------------------------------------------------------------
TEST_NAME = "5 Long-horizon recall"
REFERENCE = {5000: {"dualmem": "1.000", "finetune": "0.125"}}


def rows(sizes: list[int]) -> list[Row]:
    shown = {5000, sizes[-1]}
    out = [Row(test=TEST_NAME, metric=f"recall_{n}", label=f"Recall at N={n}",
               reference=REFERENCE.get(n, {}), in_table=n in shown) for n in sizes]
    out.append(Row(test=TEST_NAME, metric="bytes_per_item",
                   label=f"Bytes per item at N={sizes[-1]}", higher_is_better=False))
    return out


def run_recall(params: dict, cfg: RecallParams, progress: bool = False) -> TestResults:
    names = learner_names(params)
    results = TestResults(
        test="recall",
        protocol=(f"N items (cue = training image, target = 1 of {cfg.n_targets} random labels) "
                  f"shown once; recall of targets from cues with noise std {cfg.noise_std} and "
                  f"{cfg.dropout:.0%} pixel dropout; episodic k={cfg.k}; gradient nets: new head, "
                  f"online batches of {cfg.online_batch_size} (joint: offline on all N items)."),
    )
    notes: list[str] = []
    ages: dict[str, list[list[float]]] = {}
    timing: dict[str, dict[str, float]] = {}  # wall-clock: kept out of the deterministic values
    lows: list[int] = []
    sizes: list[int] = []
    for seed in tqdm(stream_seeds(params, STREAM), desc="recall seeds", disable=not progress):
        stream = open_stream(params, STREAM, seed)
        rs = make_recall_stream(stream.x_train, cfg, seed, notes)
        sizes = rs.sizes
        for name, learner, cost in post_stream_learners(params, stream):
            outcome = evaluate_learner(learner, rs, cfg, progress)
            for n, value in outcome.recall.items():
                results.add(f"recall_{n}", name, seed, value)
            results.add("bytes_per_item", name, seed, outcome.bytes_per_item)
            timing.setdefault(name, {})[str(seed)] = outcome.query_us
            results.memory.setdefault(name, cost)
            lows, curve = age_curve(outcome.correct, cfg.age_bins)
            ages.setdefault(name, []).append(curve)
    results.rows = rows(sizes)
    results.extra = {
        "sizes": sizes,
        "recall_vs_n": {name: [float(np.mean(list(results.values[f"recall_{n}"][name].values())))
                               for n in sizes] for name in names},
        "recall_vs_age": {"n": sizes[-1], "age_bin_start": lows,
                          **{name: np.nanmean(np.array(c), axis=0).tolist()
                             for name, c in ages.items()}},
        "chance": 1.0 / cfg.n_targets,
        "query_us": timing,  # microseconds per query item (encode + readout), per learner and seed
        "notes": notes,
        "params": cfg.as_dict(),
    }
    return results


def child_runs(results: TestResults) -> list[tuple[str, int, dict[str, float], list[float]]]:
    """(learner, seed, metrics, recall per N) for each tracked child run."""
    sizes = results.extra["sizes"]
    out = []
    for name, by_seed in results.values[f"recall_{sizes[0]}"].items():
        for seed in by_seed:
            metrics = {m: v[name][seed] for m, v in results.values.items() if name in v}
            metrics["query_us"] = results.extra["query_us"][name][seed]
            out.append((name, int(seed), metrics, [metrics[f"recall_{n}"] for n in sizes]))
    return out


def write_plots(results: TestResults, folder: Path) -> None:
    """plots/recall/by_n/<learner>.csv (n, recall) and by_age/<learner>.csv (age, recall)."""
    extra = results.extra
    for name, curve in extra["recall_vs_n"].items():
        write_csv(folder / "by_n" / f"{name}.csv", ["n", "recall"],
                  zip(extra["sizes"], curve, strict=True))
    by_age = extra["recall_vs_age"]
    for name in extra["recall_vs_n"]:
        write_csv(folder / "by_age" / f"{name}.csv", ["age", "recall"],
                  zip(by_age["age_bin_start"], by_age[name], strict=True))


def write_csv(path: Path, header: list[str], rows_: Iterable[tuple]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows_)
