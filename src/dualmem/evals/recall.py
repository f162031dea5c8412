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

import copy
import csv
import math
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F
from tqdm import tqdm

from dualmem.encoders import Encoder
from dualmem.learners import Learner
from dualmem.learners.dualmem import DualMemoryLearner
from dualmem.learners.gradient import GradientLearner
from dualmem.learners.joint import JointLearner
from dualmem.memory.episodic import EpisodicMemory
from dualmem.params import Section
from dualmem.results import Row, TestResults
from dualmem.runner import (
    build_learner,
    final_state_path,
    learner_names,
    load_learner_state,
    open_stream,
    stream_seeds,
)
from dualmem.seeding import derive_seed, seeded_generator

STREAM = "openworld"


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


def corrupt(x: torch.Tensor, noise_std: float, dropout: float,
            generator: torch.Generator) -> torch.Tensor:
    """Gaussian noise, clipped to [0, 1], then a random `dropout` fraction of pixels set to 0."""
    noisy = x + noise_std * torch.randn(x.shape, generator=generator)
    keep = torch.rand(x.shape, generator=generator) >= dropout
    return noisy.clamp_(0.0, 1.0) * keep


def make_recall_stream(x_train: torch.Tensor, cfg: RecallParams, seed: int,
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


# -- dual memory: episodic kNN over every prefix in one pass --------------------------------------
@torch.no_grad()
def prefix_knn_predictions(memory: EpisodicMemory, queries: torch.Tensor, sizes: list[int],
                           candidates: int, chunk: int,
                           progress: bool = False) -> dict[int, torch.Tensor]:
    """For each N in sizes: the readout of a memory holding the first N stored items, for the
    first N queries (features; normalised here) — as `EpisodicMemory(first N).read(...)`."""
    keys, labels = memory.keys, memory.labels
    queries = F.normalize(queries.float(), dim=1)
    search = keys.bfloat16() if candidates else keys
    preds = {n: torch.empty(n, dtype=torch.long) for n in sizes}
    starts = range(0, sizes[-1], chunk)
    for start in tqdm(starts, desc="episodic", disable=not progress, leave=False):
        q = queries[start : start + chunk]
        sims = q.to(search.dtype) @ search[: sizes[-1]].T
        for n in (n for n in sizes if n > start):
            rows = min(len(q), n - start)
            k = min(memory.k, n)
            if candidates:
                shortlist = sims[:rows, :n].topk(min(max(candidates, k), n), dim=1).indices
                exact = torch.einsum("qd,qcd->qc", q[:rows], keys[shortlist])
                top, pos = exact.topk(k, dim=1)
                idx = shortlist.gather(1, pos)
            else:
                top, idx = sims[:rows, :n].topk(k, dim=1)
            weights = torch.softmax(top / memory.temperature, dim=1)
            probs = torch.zeros(rows, memory.n_classes).scatter_add_(1, labels[idx], weights)
            preds[n][start : start + rows] = probs.argmax(1)
    return preds


def episodic_recall(encoder: Encoder, rs: RecallStream, cfg: RecallParams, temperature: float,
                    budget: int | None = None, progress: bool = False) -> RecallOutcome:
    keys = encoder.encode(rs.cues)
    queries = encoder.encode(rs.queries)
    recall, correct = {}, np.zeros(0, dtype=bool)

    def fresh(n: int) -> EpisodicMemory:
        memory = EpisodicMemory(encoder.out_dim, cfg.n_targets, cfg.k, temperature, budget)
        memory.write(keys[:n], rs.targets[:n])  # every item written once, in stream order
        return memory

    if budget is None:  # the memory for N is the first N items of the memory for the largest N
        memory = fresh(rs.n_max)
        preds = prefix_knn_predictions(memory, queries, rs.sizes, cfg.candidates, cfg.query_batch,
                                       progress)
    else:  # eviction depends on N: one fresh memory per N
        preds = {}
        for n in rs.sizes:
            memory = fresh(n)
            step = cfg.query_batch
            chunks = [queries[i : min(i + step, n)] for i in range(0, n, step)]
            preds[n] = torch.cat([memory.read(q).probs.argmax(1) for q in chunks])
    for n in rs.sizes:
        hits = (preds[n] == rs.targets[:n]).numpy()
        recall[n], correct = float(hits.mean()), hits
    batch = rs.queries[: cfg.query_batch]
    t0 = time.perf_counter()
    memory.read(encoder.encode(batch))
    query_us = 1e6 * (time.perf_counter() - t0) / len(batch)
    return RecallOutcome(recall, correct, memory.nbytes() / max(len(memory), 1), query_us)


# -- gradient learners: a copy of the post-stream network with a new head --------------------------
def new_network(encoder: Encoder, n_targets: int, seed: int) -> tuple[Encoder, nn.Linear]:
    net = copy.deepcopy(encoder).train()
    torch.manual_seed(derive_seed("recall-head", seed))
    return net, nn.Linear(net.out_dim, n_targets)


def train_step(net: Encoder, head: nn.Linear, opt: torch.optim.Optimizer, x: torch.Tensor,
               y: torch.Tensor) -> None:
    loss = F.cross_entropy(head(net(x)), y)
    opt.zero_grad()
    loss.backward()
    opt.step()


@torch.no_grad()
def hits_of(net: Encoder, head: nn.Linear, x: torch.Tensor, y: torch.Tensor,
            batch: int = 4096) -> np.ndarray:
    preds = torch.cat([head(net(x[i : i + batch])).argmax(1) for i in range(0, len(x), batch)])
    return (preds == y).numpy()


def timed_query_us(net: Encoder, head: nn.Linear, x: torch.Tensor) -> float:
    t0 = time.perf_counter()
    with torch.no_grad():
        head(net(x)).argmax(1)
    return 1e6 * (time.perf_counter() - t0) / len(x)


def n_params(net: Encoder, head: nn.Linear) -> int:
    return sum(p.numel() for p in (*net.parameters(), *head.parameters()))


@contextmanager
def one_thread() -> Iterator[None]:
    """Small-batch steps are overhead-bound: one thread avoids OpenMP contention (3-100x on a
    busy 2-core machine)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def online_recall(encoder: Encoder, rs: RecallStream, cfg: RecallParams, progress: bool = False,
                  ) -> RecallOutcome:
    """One online pass over the largest stream; recall@N read when the pass reaches N."""
    net, head = new_network(encoder, cfg.n_targets, rs.seed)
    opt = torch.optim.Adam([*net.parameters(), *head.parameters()], lr=cfg.online_lr)
    recall, correct, pos = {}, np.zeros(0, dtype=bool), 0
    bar = tqdm(total=rs.n_max, desc="online", disable=not progress, leave=False)
    with bar, one_thread():
        for n in rs.sizes:
            while pos < n:
                end = min(pos + cfg.online_batch_size, n)
                train_step(net, head, opt, rs.cues[pos:end], rs.targets[pos:end])
                bar.update(end - pos)
                pos = end
            correct = hits_of(net, head, rs.queries[:n], rs.targets[:n])
            recall[n] = float(correct.mean())
    query_us = timed_query_us(net, head, rs.queries[: cfg.query_batch])
    return RecallOutcome(recall, correct, 4 * n_params(net, head) / rs.n_max, query_us)


def offline_recall(encoder: Encoder, rs: RecallStream, cfg: RecallParams, progress: bool = False,
                   ) -> RecallOutcome:
    """Joint's counterpart: per N, a fresh copy trained on all N stored items for several epochs."""
    recall, correct = {}, np.zeros(0, dtype=bool)
    with one_thread():
        for n in tqdm(rs.sizes, desc="offline", disable=not progress, leave=False):
            net, head = new_network(encoder, cfg.n_targets, rs.seed)
            opt = torch.optim.Adam([*net.parameters(), *head.parameters()], lr=cfg.offline_lr)
            generator = seeded_generator("recall-offline", rs.seed, n)
            per_epoch = math.ceil(n / cfg.offline_batch_size)
            for _ in range(max(cfg.offline_epochs, math.ceil(cfg.offline_min_steps / per_epoch))):
                order = torch.randperm(n, generator=generator)
                for start in range(0, n, cfg.offline_batch_size):
                    rows = order[start : start + cfg.offline_batch_size]
                    train_step(net, head, opt, rs.cues[rows], rs.targets[rows])
            correct = hits_of(net, head, rs.queries[:n], rs.targets[:n])
            recall[n] = float(correct.mean())
    query_us = timed_query_us(net, head, rs.queries[: cfg.query_batch])
    item_bytes = rs.cues.shape[1] + 8  # the kept item (uint8 code) and its label
    return RecallOutcome(recall, correct, 4 * n_params(net, head) / rs.n_max + item_bytes, query_us)


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
        for name in names:
            learner = build_learner(params, name, stream)
            state = final_state_path(name, STREAM, seed, stream.n_tasks - 1)
            cost = load_learner_state(learner, state)
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
