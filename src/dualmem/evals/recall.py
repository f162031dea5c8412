"""Test 5 — long-horizon recall of arbitrary associations.

Per seed, a stream of N distinct items is shown once each: cue = a training image of the main
dataset (drawn without replacement), target = one of `n_targets` labels drawn at random per item.
After the stream every cue is presented again, corrupted (Gaussian noise, clip to [0, 1], random
pixel dropout), and recall@N is the fraction of items whose target comes back. The stream for N is
the first N items of the stream for the largest N, so one pass serves every N. Each learner stores
and recalls through its capability `recall` (see learners/common/base.py):
- memory-based learners (default): a fresh episodic memory of the learner's features within the
  memory budget, every item written once; its kNN readout (k in params) is evaluated for all prefixes
  from one pass of similarities (`dualmem.evals.recall_memory`: bf16 shortlist of `candidates` items
  re-ranked in float32; candidates: 0 = exact float32 search);
- head-based learners: a copy of the post-stream encoder with a new head, trained online, one pass,
  Adam on batches of the newest items; batch boundaries fall at every N, so the state read at N is
  exactly the learner after the first N items (`dualmem.evals.recall_networks`);
- joint: the upper-bound counterpart, a copy of its encoder with a new head trained offline on all
  N items (>= `epochs` epochs and >= `min_steps` steps), separately per N; it keeps the items.
The loaded learner states are never modified (copies and fresh memories only).
"""

from __future__ import annotations

import numpy as np
from tqdm import tqdm

from dualmem.core.results import Row, TestResults
from dualmem.evals.recall_protocol import RecallOutcome, RecallParams, make_recall_stream
from dualmem.learners.common.base import check_unrevealed
from dualmem.runner import open_stream, post_stream_learner, stream_seeds

STREAM = "openworld"


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


def recall_on_seed(params: dict, name: str, cfg: RecallParams, seed: int, notes: list[str],
                   progress: bool = False) -> tuple[RecallOutcome, dict[str, int], list[int]]:
    """(outcome, memory cost, sizes) of learner `name` on one open-world seed. The seed's images, cues,
    queries and learner are freed when it returns, before the next seed's are built."""
    stream = open_stream(params, STREAM, seed)
    rs = make_recall_stream(stream.x_train, cfg, seed, notes)
    learner, cost = post_stream_learner(params, name, stream)
    outcome = learner.recall(rs, cfg, progress)
    check_unrevealed(learner, stream.held_out)
    return outcome, cost, rs.sizes


def run_recall(params: dict, name: str, cfg: RecallParams, progress: bool = False) -> TestResults:
    """The learner `name` on every open-world seed: its `recall` capability from its post-stream state
    (which it reads, never modifies)."""
    results = TestResults(
        test="recall",
        protocol=(f"N items (cue = training image, target = 1 of {cfg.n_targets} random labels) "
                  f"shown once; recall of targets from cues with noise std {cfg.noise_std} and "
                  f"{cfg.dropout:.0%} pixel dropout; each learner's own rule: memory-based ones store "
                  f"items within the memory budget (kNN, k={cfg.k}); head-based ones train a copy with a "
                  f"new head online (batches of {cfg.online_batch_size}; joint: offline on all N items)."),
    )
    notes: list[str] = []
    ages: list[list[float]] = []
    timing: dict[str, float] = {}  # wall-clock: kept out of the deterministic values
    lows: list[int] = []
    sizes: list[int] = []
    for seed in tqdm(stream_seeds(params, STREAM), desc=f"recall {name}", disable=not progress):
        outcome, cost, sizes = recall_on_seed(params, name, cfg, seed, notes, progress)
        for n, value in outcome.recall.items():
            results.add(f"recall_{n}", name, seed, value)
        results.add("bytes_per_item", name, seed, outcome.bytes_per_item)
        timing[str(seed)] = outcome.query_us
        results.memory.setdefault(name, cost)
        lows, curve = age_curve(outcome.correct, cfg.age_bins)
        ages.append(curve)
    results.rows = rows(sizes)
    results.extra = {
        "sizes": sizes,
        "recall_vs_n": {name: [float(np.mean(list(results.values[f"recall_{n}"][name].values()))) for n in sizes]},
        "recall_vs_age": {"n": sizes[-1], "age_bin_start": lows, name: np.nanmean(np.array(ages), axis=0).tolist()},
        "chance": 1.0 / cfg.n_targets,
        "query_us": {name: timing},  # microseconds per query item (encode + readout), per seed
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
