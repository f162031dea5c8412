"""Episodic-memory backends at scale: write and query latency (p50/p99, batch 1 and batch 1,024, one
thread), bytes per item, build time and recall, for N = 10^3 ... 10^6 stored items.

Items: seeded random binary patterns (each pixel on with probability 1/2), keyed by the L2-normalised
features of a seeded, untrained encoder of the configured architecture — an item source that reaches
any N without repeating an image. Recall: a probe is a stored item's pattern corrupted as Test 5
corrupts its cues (Gaussian noise, clipped, then pixel dropout; `evaluate_recall.noise_std`,
`evaluate_recall.dropout`); it is recalled when the nearest key is that item's own. Every backend
indexes the same keys and answers the same probes, so its recall is comparable with exact search's.

Two probe sets per N, of disjoint items and independent corruption: the report set (`probe_set`, what
`make bench` reports) and a validation set (`purpose="validation"`), the only one `tune_nprobe` (`python
-m dualmem.bench --tune-nprobe ...`) uses to choose IVF settings — so the reported recall is not the
recall the settings were chosen on. Quantisers train on the keys written (the first `train_min`), never
on probes.

Everything timed runs at one thread (torch and FAISS), the build included: reproducible, and on a
loaded machine FAISS's OpenMP regions with more threads than free cores can be many times slower
(training 4-bit PQ codebooks: 0.5 s at one thread, 24 s at two on a busy 2-core machine).
Latency: batch 1 and batch 1,024; each timing takes its number of samples or stops once its time budget
is spent (never under `min_runs` samples), so the exhaustive backends at 10^6 stay within a few minutes.
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

from dualmem.core.seeding import seeded_generator
from dualmem.encoders import Encoder, new_encoder
from dualmem.evals.recall_protocol import corrupt
from dualmem.knn_index import MIN_KEYS_PER_CENTROID, FaissIndex, IndexConfig, make_index

CHUNK = 65_536
PROBE_STREAMS = {"report": "bench-probes", "validation": "bench-probes-validation"}


def pq_min_keys(cfg: IndexConfig) -> int:
    """FAISS's floor for training PQ codebooks of 2^pq_bits centroids; below it IVF-PQ is skipped."""
    return (1 << cfg.pq_bits) * MIN_KEYS_PER_CENTROID


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
              seed: int, purpose: str = "report") -> tuple[np.ndarray, np.ndarray]:
    """(probe ids among the first n items, their corrupted-pattern keys). `purpose="validation"` draws
    other items (never a report probe's, while n allows) with its own corruption noise."""
    generator = seeded_generator(PROBE_STREAMS[purpose], seed, n)
    order = torch.randperm(n, generator=generator)
    if purpose == "validation":
        report = torch.randperm(n, generator=seeded_generator(PROBE_STREAMS["report"], seed, n))[: min(n_probes, n)]
        taken = torch.zeros(n, dtype=torch.bool)
        taken[report] = True
        order = torch.cat([order[~taken[order]], order[taken[order]]])
    ids = order[: min(n_probes, n)].sort().values.numpy()
    clean = torch.cat([patterns(chunk * CHUNK, min(n, (chunk + 1) * CHUNK), encoder.n_in, seed)[
        ids[ids // CHUNK == chunk] - chunk * CHUNK] for chunk in np.unique(ids // CHUNK)])
    return ids, encode_keys(encoder, corrupt(clean, noise_std, dropout, generator))


def percentiles_ms(samples: list[float]) -> tuple[float, float]:
    arr = 1e3 * np.asarray(samples)
    return float(np.percentile(arr, 50)), float(np.percentile(arr, 99))


def timed_each(call: Callable[[np.ndarray], object], inputs: list[np.ndarray], budget_s: float = float("inf"),
               min_runs: int = 1) -> list[float]:
    """Seconds of `call(x)` for each x, stopping early once `budget_s` is spent (after `min_runs`)."""
    out: list[float] = []
    for x in inputs:
        start = time.perf_counter()
        call(x)
        out.append(time.perf_counter() - start)
        if len(out) >= min_runs and sum(out) > budget_s:
            break
    return out


def capped(cfg: IndexConfig, backend: str, n: int) -> IndexConfig:
    """`cfg` for `backend` at n keys: nlist capped at n / 39 (FAISS's floor), nprobe at nlist."""
    nlist = min(cfg.nlist, max(1, n // MIN_KEYS_PER_CENTROID))
    return replace(cfg, backend=backend, nlist=nlist, nprobe=min(cfg.nprobe, nlist))


def build(backend: str, keys: np.ndarray, n: int, cfg: IndexConfig, spare: int = 0) -> tuple[object, float]:
    """The index of the first n keys, written in chunks as a stream writes them, and its build seconds
    (IVF quantisers train on the first keys written). `spare`: room for later writes (exact index)."""
    index = make_index(keys.shape[1], capped(cfg, backend, n), capacity=n + spare)
    start = time.perf_counter()
    for lo in range(0, n, CHUNK):
        index.add(keys[lo : min(n, lo + CHUNK)])
    index.search(keys[:1], 1)  # trains a quantiser still waiting for keys (n < train_min)
    return index, time.perf_counter() - start


def recall_of(index, probe_ids: np.ndarray, probe_keys: np.ndarray) -> float:
    _, rows = index.search(probe_keys, 1)
    return float((rows[:, 0] == probe_ids).mean())


def bench_backend(backend: str, keys: np.ndarray, n: int, probe_ids: np.ndarray, probe_keys: np.ndarray,
                  cfg: IndexConfig) -> MemoryBenchRow:
    n_writes, n_batch_writes = 100, 3
    batch = np.resize(probe_keys, (1024, keys.shape[1]))
    with one_thread():
        index, build_s = build(backend, keys, n, cfg, spare=n_writes + 1024 * n_batch_writes)
        recall = recall_of(index, probe_ids, probe_keys)
        singles = [probe_keys[i : i + 1] for i in range(min(300, len(probe_keys)))]
        q1 = timed_each(lambda q: index.search(q, 10), singles, budget_s=10.0, min_runs=50)
        q1024 = timed_each(lambda q: index.search(q, 10), [batch] * 5, budget_s=15.0)
        # writes of further keys (never probed): what it costs to grow a memory that holds n
        w1 = timed_each(index.add, [keys[i : i + 1] for i in range(n_writes)], budget_s=5.0, min_runs=20)
        w1024 = timed_each(index.add, [keys[:1024]] * n_batch_writes)
    return MemoryBenchRow(backend, n, index.bytes_per_item(), index.overhead_bytes(), build_s, *percentiles_ms(w1),
                          percentiles_ms(w1024)[0], *percentiles_ms(q1), *percentiles_ms(q1024), recall,
                          len(probe_ids))


def memory_bench(hidden: list[int], n_in: int, sizes: list[int], backends: list[str], cfg: IndexConfig,
                 n_probes: int, noise_std: float, dropout: float, seed: int = 0,
                 progress: bool = True) -> list[MemoryBenchRow]:
    """One row per (N, backend) on the report probes; IVF-PQ is skipped below `pq_min_keys(cfg)`."""
    encoder = new_encoder(n_in, hidden, "bench", seed)
    keys = item_keys(encoder, max(sizes), seed, progress)
    rows = []
    for n in sizes:
        probe_ids, probe_keys = probe_set(encoder, n, n_probes, noise_std, dropout, seed)
        for backend in tqdm(backends, desc=f"memory N={n:,}", disable=not progress, leave=False):
            if backend == "faiss_ivfpq" and n < pq_min_keys(cfg):
                continue
            rows.append(bench_backend(backend, keys, n, probe_ids, probe_keys, cfg))
    return rows


@dataclass(frozen=True)
class TuneRow:
    backend: str
    n: int
    nlist: int
    nprobe: int
    bytes_per_item: float
    recall: float  # on the validation probes
    exact_recall: float  # exact search, same keys, same validation probes
    query_p50_ms_b1: float
    query_p99_ms_b1: float


def tune_nprobe(hidden: list[int], n_in: int, n: int, backend: str, cfg: IndexConfig, nprobes: list[int],
                n_probes: int, noise_std: float, dropout: float, seed: int = 0,
                progress: bool = True) -> list[TuneRow]:
    """Recall and batch-1 latency of one IVF index of n keys at each nprobe, on the validation probes only
    (never the report probes), beside exact search's recall on them: what to choose `nprobe` from."""
    if backend not in ("faiss_ivf", "faiss_ivfpq"):
        raise ValueError(f"tune_nprobe needs an IVF backend, not {backend!r}")
    encoder = new_encoder(n_in, hidden, "bench", seed)
    keys = item_keys(encoder, n, seed, progress)
    probe_ids, probe_keys = probe_set(encoder, n, n_probes, noise_std, dropout, seed, purpose="validation")
    exact = make_index(keys.shape[1], IndexConfig())
    exact.add(keys)
    exact_recall = recall_of(exact, probe_ids, probe_keys)
    del exact
    rows = []
    with one_thread():
        index, _ = build(backend, keys, n, cfg)
        assert isinstance(index, FaissIndex)
        del keys
        for nprobe in tqdm(nprobes, desc="nprobe", disable=not progress, leave=False):
            index.set_nprobe(nprobe)
            recall = recall_of(index, probe_ids, probe_keys)
            singles = [probe_keys[i : i + 1] for i in range(min(300, len(probe_keys)))]
            p50, p99 = percentiles_ms(timed_each(lambda q: index.search(q, 10), singles))
            rows.append(TuneRow(backend, n, index.cfg.nlist, int(index.index.nprobe), index.bytes_per_item(), recall,
                                exact_recall, p50, p99))
    return rows
