"""Nearest-neighbour indexes over L2-normalised keys (inner product = cosine similarity), one
interface for every backend:

- `exact`: a dense float32 torch matrix searched exhaustively (the episodic memory's own search);
- `faiss_flat`: FAISS IndexFlatIP (exhaustive, float32);
- `faiss_ivf`: IndexIVFFlat, keys bucketed by a coarse k-means quantiser, `nprobe` buckets searched;
- `faiss_ivfpq`: IndexIVFPQ, each key stored as `pq_bytes` bytes of product-quantisation code.

The IVF backends train their quantisers on the first keys they are given (at least `train_min`
of them): in a stream, the keys written so far — never a key that has not been written.
Bytes per item count what the index keeps per stored key (vector or code, and its 8-byte id in the
inverted lists); the quantisers' centroids are shared and reported apart (`overhead_bytes`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

BACKENDS = ("exact", "faiss_flat", "faiss_ivf", "faiss_ivfpq")
FAISS_INSTALL = "pip install faiss-cpu==1.15.1 (it is in requirements.txt; `make setup` installs it)"


@dataclass(frozen=True)
class IndexConfig:
    backend: str = "exact"
    nlist: int = 1024  # IVF buckets (about sqrt(N) at N = 10^6)
    nprobe: int = 32  # buckets searched per query
    pq_bytes: int = 50  # IVF-PQ code bytes per key (must divide the key dimension)
    train_min: int = 50_000  # keys the IVF quantisers train on (the first ones written)


class ExactIndex:
    """Dense float32 keys searched exhaustively. Storage grows by doubling, so a write costs amortised
    O(its own size), not a copy of everything stored (what `torch.cat` onto the full matrix costs)."""

    def __init__(self, dim: int) -> None:
        self.dim, self.n = dim, 0
        self.buffer = torch.empty(0, dim)

    def __len__(self) -> int:
        return self.n

    @property
    def keys(self) -> torch.Tensor:
        return self.buffer[: self.n]

    def add(self, keys: np.ndarray) -> None:
        new = torch.from_numpy(np.ascontiguousarray(keys, dtype=np.float32))
        if self.n + len(new) > len(self.buffer):
            grown = torch.empty(max(2 * len(self.buffer), self.n + len(new), 1024), self.dim)
            grown[: self.n] = self.keys
            self.buffer = grown
        self.buffer[self.n : self.n + len(new)] = new
        self.n += len(new)

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        sims, rows = (torch.from_numpy(np.ascontiguousarray(queries, dtype=np.float32)) @ self.keys.T).topk(k, dim=1)
        return sims.numpy(), rows.numpy()

    def bytes_per_item(self) -> float:
        return 4.0 * self.dim

    def overhead_bytes(self) -> int:
        return 4 * self.dim * (len(self.buffer) - self.n)  # capacity not yet filled


class FaissIndex:
    """A FAISS index; IVF kinds buffer keys until `train_min` have come, then train and add them."""

    def __init__(self, dim: int, cfg: IndexConfig) -> None:
        try:
            import faiss
        except ImportError as exc:
            from dualmem.errors import DataError

            raise DataError(f"backend {cfg.backend!r} needs faiss; fix: {FAISS_INSTALL}") from exc
        self.faiss, self.dim, self.cfg = faiss, dim, cfg
        metric = faiss.METRIC_INNER_PRODUCT
        if cfg.backend == "faiss_flat":
            self.index = faiss.IndexFlatIP(dim)
        else:
            self.quantiser = faiss.IndexFlatIP(dim)
            if cfg.backend == "faiss_ivf":
                self.index = faiss.IndexIVFFlat(self.quantiser, dim, cfg.nlist, metric)
            else:
                if dim % cfg.pq_bytes:
                    raise ValueError(f"pq_bytes {cfg.pq_bytes} must divide the key dimension {dim}")
                self.index = faiss.IndexIVFPQ(self.quantiser, dim, cfg.nlist, cfg.pq_bytes, 8, metric)
            self.index.nprobe = cfg.nprobe
        self.pending: list[np.ndarray] = []

    def __len__(self) -> int:
        return int(self.index.ntotal) + sum(len(p) for p in self.pending)

    def add(self, keys: np.ndarray) -> None:
        keys = np.ascontiguousarray(keys, dtype=np.float32)
        if self.index.is_trained:
            self.index.add(keys)
            return
        self.pending.append(keys)
        if sum(len(p) for p in self.pending) >= max(self.cfg.train_min, self.cfg.nlist):
            self.train_and_flush()

    def train_and_flush(self) -> None:
        held = np.concatenate(self.pending)
        self.pending = []
        if not self.index.is_trained:
            self.index.train(held)
        self.index.add(held)

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        if self.pending:
            self.train_and_flush()
        sims, rows = self.index.search(np.ascontiguousarray(queries, dtype=np.float32), k)
        return sims, rows

    def bytes_per_item(self) -> float:
        if self.cfg.backend == "faiss_flat":
            return 4.0 * self.dim
        code = 4 * self.dim if self.cfg.backend == "faiss_ivf" else self.cfg.pq_bytes
        return float(code + 8)  # the code and its int64 id in the inverted list

    def overhead_bytes(self) -> int:
        if self.cfg.backend == "faiss_flat":
            return 0
        centroids = 4 * self.dim * self.cfg.nlist
        codebooks = 4 * self.dim * 256 if self.cfg.backend == "faiss_ivfpq" else 0
        return centroids + codebooks


def make_index(dim: int, cfg: IndexConfig) -> ExactIndex | FaissIndex:
    if cfg.backend not in BACKENDS:
        raise ValueError(f"unknown backend {cfg.backend!r}; use one of {BACKENDS}")
    return ExactIndex(dim) if cfg.backend == "exact" else FaissIndex(dim, cfg)
