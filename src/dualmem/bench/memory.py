"""Episodic-memory backends at scale: write and query latency (p50/p99, batch 1 and batch 1,024, one
thread), bytes per item, build time and recall, for N = 10^3 ... 10^6 stored items.

Items: seeded random binary patterns (each pixel on with probability 1/2), keyed by the L2-normalised
features of a seeded, untrained encoder of the configured architecture — an item source that reaches
any N without repeating an image. Recall: a probe is a stored item's pattern corrupted as Test 5
corrupts its cues (Gaussian noise, clipped, then pixel dropout; `evaluate_recall.noise_std`,
`evaluate_recall.dropout`); it is recalled when the nearest key is that item's own. Every backend
indexes the same keys and answers the same probes, so its recall is comparable with exact search's.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, replace

import numpy as np
import torch
from torch.nn import functional as F
from tqdm import tqdm

from dualmem.encoders import Encoder, new_encoder
from dualmem.evals.recall_protocol import corrupt
from dualmem.knn_index import IndexConfig, make_index
from dualmem.seeding import seeded_generator

CHUNK = 65_536
PQ_MIN_KEYS = 256 * 39  # FAISS's floor for training 256-centroid PQ codebooks; below it IVF-PQ is skipped


@dataclass(frozen=True)
class MemoryBenchRow:
    backend: str
    n: int
    bytes_per_item: float
    overhead_bytes: int
    build_seconds: float
    write_p50_ms_b1: float
    write_p99_ms_b1: float
    write_p50_ms_b1024: float
    query_p50_ms_b1: float
    query_p99_ms_b1: float
    query_p50_ms_b1024: float
    query_p99_ms_b1024: float
    recall: float
    probes: int

    def as_dict(self) -> dict:
        return asdict(self)


@contextmanager
def one_thread() -> Iterator[None]:
    import faiss

    before = torch.get_num_threads(), faiss.omp_get_max_threads()
    torch.set_num_threads(1)
    faiss.omp_set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before[0])
        faiss.omp_set_num_threads(before[1])


def patterns(start: int, stop: int, n_in: int, seed: int) -> torch.Tensor:
    """Items start..stop-1 of the seeded pattern stream (the same item always gets the same pattern)."""
    rows = []
    for chunk in range(start // CHUNK, (stop - 1) // CHUNK + 1):
        generator = seeded_generator("bench-patterns", seed, chunk)
        block = (torch.rand(CHUNK, n_in, generator=generator) < 0.5).float()
        lo, hi = max(start, chunk * CHUNK) - chunk * CHUNK, min(stop, (chunk + 1) * CHUNK) - chunk * CHUNK
        rows.append(block[lo:hi])
    return torch.cat(rows)


def encode_keys(encoder: Encoder, x: torch.Tensor) -> np.ndarray:
    return F.normalize(encoder.encode(x), dim=1).numpy()


def item_keys(encoder: Encoder, n: int, seed: int, progress: bool) -> np.ndarray:
    keys = np.empty((n, encoder.out_dim), dtype=np.float32)
    for start in tqdm(range(0, n, CHUNK), desc="bench keys", disable=not progress, leave=False):
        stop = min(n, start + CHUNK)
        keys[start:stop] = encode_keys(encoder, patterns(start, stop, encoder.n_in, seed))
    return keys


def probe_set(encoder: Encoder, n: int, n_probes: int, noise_std: float, dropout: float,
              seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(probe ids among the first n items, their corrupted-pattern keys)."""
    generator = seeded_generator("bench-probes", seed, n)
    ids = torch.randperm(n, generator=generator)[: min(n_probes, n)].sort().values.numpy()
    clean = torch.cat([patterns(chunk * CHUNK, min(n, (chunk + 1) * CHUNK), encoder.n_in, seed)[
        ids[ids // CHUNK == chunk] - chunk * CHUNK] for chunk in np.unique(ids // CHUNK)])
    return ids, encode_keys(encoder, corrupt(clean, noise_std, dropout, generator))


def percentiles_ms(samples: list[float]) -> tuple[float, float]:
    arr = 1e3 * np.asarray(samples)
    return float(np.percentile(arr, 50)), float(np.percentile(arr, 99))


def timed_each(call: Callable[[np.ndarray], object], inputs: list[np.ndarray]) -> list[float]:
    """Seconds of `call(x)` for each x."""
    out = []
    for x in inputs:
        start = time.perf_counter()
        call(x)
        out.append(time.perf_counter() - start)
    return out


def bench_backend(backend: str, keys: np.ndarray, n: int, probe_ids: np.ndarray, probe_keys: np.ndarray,
                  cfg: IndexConfig) -> MemoryBenchRow:
    index_cfg = replace(cfg, backend=backend, nlist=min(cfg.nlist, max(1, n // 39)))  # FAISS: >= 39 keys per list
    index = make_index(keys.shape[1], index_cfg)
    start = time.perf_counter()
    for lo in range(0, n, CHUNK):
        index.add(keys[lo : min(n, lo + CHUNK)])
    index.search(probe_keys[:1], 1)  # IVF quantisers train on what was written
    build = time.perf_counter() - start
    batch = np.resize(probe_keys, (1024, keys.shape[1]))
    big_exhaustive = backend in ("exact", "faiss_flat") and n >= 10**5  # seconds per 1,024-query batch
    with one_thread():
        _, rows = index.search(probe_keys, 1)
        recall = float((rows[:, 0] == probe_ids).mean())
        singles = [probe_keys[i : i + 1] for i in range(min(200, len(probe_keys)))]
        q1 = timed_each(lambda q: index.search(q, 10), singles)
        q1024 = timed_each(lambda q: index.search(q, 10), [batch] * (3 if big_exhaustive else 5))
        # writes of further keys (never probed): what it costs to grow a memory that holds n
        w1 = timed_each(index.add, [keys[i : i + 1] for i in range(20 if big_exhaustive else 100)])
        w1024 = timed_each(index.add, [keys[:1024]] * 3)
    return MemoryBenchRow(backend, n, index.bytes_per_item(), index.overhead_bytes(), build, *percentiles_ms(w1),
                          percentiles_ms(w1024)[0], *percentiles_ms(q1), *percentiles_ms(q1024), recall,
                          len(probe_ids))


def memory_bench(hidden: list[int], n_in: int, sizes: list[int], backends: list[str], cfg: IndexConfig,
                 n_probes: int, noise_std: float, dropout: float, seed: int = 0,
                 progress: bool = True) -> list[MemoryBenchRow]:
    encoder = new_encoder(n_in, hidden, "bench", seed)
    keys = item_keys(encoder, max(sizes), seed, progress)
    rows = []
    for n in sizes:
        probe_ids, probe_keys = probe_set(encoder, n, n_probes, noise_std, dropout, seed)
        for backend in tqdm(backends, desc=f"memory N={n:,}", disable=not progress, leave=False):
            if backend == "faiss_ivfpq" and n < PQ_MIN_KEYS:
                continue
            rows.append(bench_backend(backend, keys, n, probe_ids, probe_keys, cfg))
    return rows
