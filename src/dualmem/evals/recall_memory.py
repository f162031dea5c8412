"""Test 5 for memory-based learners: a fresh episodic memory of the learner's features, every item
written once in stream order, read by kNN (see `dualmem.evals.recall` for the protocol)."""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np
import torch
from torch.nn import functional as F
from tqdm import tqdm

from dualmem.encoders import ENCODE_BATCH
from dualmem.evals.recall_protocol import RecallOutcome, RecallParams, RecallStream
from dualmem.memory.episodic import EpisodicMemory

Features = Callable[[torch.Tensor], torch.Tensor]


class LazyFeatures:
    """features(x), computed a block of ENCODE_BATCH rows at a time when a slice asks for it, and never
    held whole: the same numbers as one call on all of x (which encodes in the same blocks), without
    its N x d buffer (237 MB for the dual memory's keys or queries at N = 50,000)."""

    def __init__(self, features: Features, x: torch.Tensor) -> None:
        self.features, self.x = features, x
        self.cached: tuple[int, torch.Tensor] | None = None

    def block(self, b: int) -> torch.Tensor:
        if self.cached is None or self.cached[0] != b:
            self.cached = (b, self.features(self.x[b * ENCODE_BATCH : (b + 1) * ENCODE_BATCH]))
        return self.cached[1]

    def rows(self, start: int, stop: int) -> torch.Tensor:
        stop = min(stop, len(self.x))
        parts = [self.block(b)[max(start - b * ENCODE_BATCH, 0) : stop - b * ENCODE_BATCH]
                 for b in range(start // ENCODE_BATCH, (stop - 1) // ENCODE_BATCH + 1)]
        return parts[0] if len(parts) == 1 else torch.cat(parts)


@torch.no_grad()
def prefix_knn_predictions(memory: EpisodicMemory, queries: LazyFeatures, sizes: list[int],
                           candidates: int, chunk: int,
                           progress: bool = False) -> dict[int, torch.Tensor]:
    """For each N in sizes: the readout of a memory holding the first N stored items, for the
    first N queries (features; normalised here) — as `EpisodicMemory(first N).read(...)`."""
    keys, labels = memory.keys, memory.labels
    search = keys.bfloat16() if candidates else keys
    preds = {n: torch.empty(n, dtype=torch.long) for n in sizes}
    starts = range(0, sizes[-1], chunk)
    for start in tqdm(starts, desc="episodic", disable=not progress, leave=False):
        q = F.normalize(queries.rows(start, start + chunk).float(), dim=1)
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


def knn_recall(features: Features, rs: RecallStream, cfg: RecallParams,
               budget: int | None = None, temperature: float = 0.05, progress: bool = False,
               storage: str = "float32") -> RecallOutcome:
    """Recall from a fresh episodic memory of `features` holding at most `budget` items (None = all),
    its keys kept in `storage`."""
    keys, queries = LazyFeatures(features, rs.cues), LazyFeatures(features, rs.queries)
    recall, correct = {}, np.zeros(0, dtype=bool)

    def fresh(n: int) -> EpisodicMemory:
        """The first n items written once each, in stream order, a block at a time. Over the budget, what
        block-wise writes keep is what one write keeps (tests/test_recall.py), and no N x d buffer of
        keys is ever held."""
        memory = EpisodicMemory(keys.rows(0, 1).shape[1], cfg.n_targets, cfg.k, temperature, budget, storage)
        for start in range(0, n, ENCODE_BATCH):
            stop = min(start + ENCODE_BATCH, n)
            memory.write(keys.rows(start, stop), rs.targets[start:stop])
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
            preds[n] = torch.cat([memory.read(queries.rows(i, min(i + step, n))).probs.argmax(1)
                                  for i in range(0, n, step)])
    for n in rs.sizes:
        hits = (preds[n] == rs.targets[:n]).numpy()
        recall[n], correct = float(hits.mean()), hits
    batch = rs.queries[: cfg.query_batch]
    t0 = time.perf_counter()
    memory.read(features(batch))
    query_us = 1e6 * (time.perf_counter() - t0) / len(batch)
    return RecallOutcome(recall, correct, memory.nbytes() / max(len(memory), 1), query_us)


