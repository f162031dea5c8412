"""Test 5 for memory-based learners: a fresh episodic memory of the learner's features, every item
written once in stream order, read by kNN (see `dualmem.evals.recall` for the protocol)."""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np
import torch
from torch.nn import functional as F
from tqdm import tqdm

from dualmem.evals.recall_protocol import RecallOutcome, RecallParams, RecallStream
from dualmem.memory.episodic import EpisodicMemory


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


def knn_recall(features: Callable[[torch.Tensor], torch.Tensor], rs: RecallStream, cfg: RecallParams,
               budget: int | None = None, temperature: float = 0.05, progress: bool = False,
               storage: str = "float32") -> RecallOutcome:
    """Recall from a fresh episodic memory of `features` holding at most `budget` items (None = all),
    its keys kept in `storage`."""
    keys = features(rs.cues)
    queries = features(rs.queries)
    recall, correct = {}, np.zeros(0, dtype=bool)

    def fresh(n: int) -> EpisodicMemory:
        memory = EpisodicMemory(keys.shape[1], cfg.n_targets, cfg.k, temperature, budget, storage)
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
    memory.read(features(batch))
    query_us = 1e6 * (time.perf_counter() - t0) / len(batch)
    return RecallOutcome(recall, correct, memory.nbytes() / max(len(memory), 1), query_us)


