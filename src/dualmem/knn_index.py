"""Nearest-neighbour indexes over L2-normalised keys, one interface for every backend:

- `exact`: a dense float32 torch matrix searched exhaustively (the episodic memory's own search);
- `faiss_flat`: FAISS IndexFlatIP (exhaustive, float32);
- `faiss_ivf`: IndexIVFFlat, keys bucketed by a coarse k-means quantiser, `nprobe` buckets searched;
- `faiss_ivfpq`: IVF with product-quantised codes, `pq_bytes` bytes of code per key:
  `pq_bits: 4` is IndexIVFPQFastScan (2 * pq_bytes sub-quantisers of 16 centroids each, scanned with
  SIMD look-ups in registers), `pq_bits: 8` IndexIVFPQ (pq_bytes sub-quantisers of 256 centroids).

Similarity is the inner product, i.e. the cosine of unit keys. The IVF kinds bucket and rank by L2
distance instead, which orders unit vectors exactly as the inner product does (|q - k|^2 = 2 - 2 q.k);
they return 1 - d/2, the cosine (approximate where the key is a PQ code). L2 k-means is what FAISS's IVF
training does fastest, and on this project's keys it buckets as well as its inner-product variant.

The IVF backends train their quantisers on the first keys they are given (at least `train_min`, and
at least `nlist`, of them): in a stream, the keys written so far — never a key that has not been
written, never a query. Until then those keys wait as float32 (counted in `overhead_bytes`).

Bytes: `bytes_per_item` is what one more stored key costs — its vector or code, plus its 8-byte id in
the inverted lists for IVF kinds. `overhead_bytes` is what the index holds besides: coarse centroids,
PQ codebooks, IVF-PQ's precomputed distance tables, fast-scan's padding of each list to whole blocks of
32 codes, keys waiting for training, unused capacity of the exact matrix. `len(index) * bytes_per_item()
+ overhead_bytes()` is the whole index (for FAISS kinds: its serialised size, but for the header and
the precomputed tables, which FAISS rebuilds on load rather than stores).

`IndexConfig.from_section` builds a validated config from a params section (e.g. `bench.index`).
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace

import numpy as np
import torch

from dualmem.core.errors import ParamsError
from dualmem.core.params import Section, param, parse_config

BACKENDS = ("exact", "faiss_flat", "faiss_ivf", "faiss_ivfpq")
PQ_BITS = (4, 8)
ID_BYTES = 8  # FAISS stores an int64 id beside each code in an inverted list
MIN_KEYS_PER_CENTROID = 39  # FAISS's floor for k-means training (it warns below)
FAISS_INSTALL = "pip install faiss-cpu==1.15.1 (it is in requirements.txt; `make setup` installs it)"
SEARCH_BLOCK = 1 << 26  # exact search: at most this many query-key similarities in memory at once (256 MB)


@dataclass(frozen=True)
class IndexConfig:
    backend: str = param("exact", choices=BACKENDS)
    nlist: int = param(512, minimum=1)  # IVF buckets
    nprobe: int = param(96, minimum=1)  # buckets searched per query
    pq_bytes: int = param(25, minimum=1)  # IVF-PQ code bytes per key (its 8-byte id comes on top)
    pq_bits: int = param(4, minimum=4, maximum=8)  # bits per sub-quantiser: 4 (fast-scan) or 8
    train_min: int = param(100_000, minimum=1)  # keys the IVF quantisers train on (the first ones written)

    @property
    def pq_m(self) -> int:
        """Sub-quantisers of an IVF-PQ code."""
        return self.pq_bytes * 8 // self.pq_bits

    def problems(self, dim: int | None = None, every_backend: bool = False) -> list[tuple[str, str, str]]:
        """(field, problem, fix) for each setting this config cannot be built with (on keys of `dim`); the PQ
        settings are checked for `faiss_ivfpq`, or for every backend with `every_backend`."""
        out = []
        if self.backend not in BACKENDS:
            out.append(("backend", f"is {self.backend!r}, not one of {list(BACKENDS)}", f"use one of {BACKENDS}"))
        for name in ("nlist", "nprobe", "pq_bytes", "train_min"):
            if getattr(self, name) < 1:
                out.append((name, f"must be >= 1, got {getattr(self, name)}", "use a positive integer"))
        if self.pq_bits not in PQ_BITS:
            out.append(("pq_bits", f"is {self.pq_bits}, not one of {list(PQ_BITS)}",
                        "use 4 (fast-scan codes) or 8 (IndexIVFPQ)"))
        elif (every_backend or self.backend == "faiss_ivfpq") and dim is not None and self.pq_bytes >= 1 \
                and dim % self.pq_m:
            divisors = [b for b in range(1, dim + 1) if dim % (b * 8 // self.pq_bits) == 0][:12]
            out.append(("pq_bytes", f"is {self.pq_bytes}: {self.pq_m} sub-quantisers of {self.pq_bits} bits, which "
                        f"does not divide the key dimension {dim}", f"use one of {divisors} (or another pq_bits)"))
        if self.nprobe > self.nlist >= 1:
            out.append(("nprobe", f"is {self.nprobe}, more than the nlist = {self.nlist} buckets",
                        f"use a value <= {self.nlist}"))
        return out

    def check(self, dim: int | None = None) -> None:
        """Raise ValueError naming the first setting this config cannot be built with."""
        for name, problem, fix in self.problems(dim):
            raise ValueError(f"IndexConfig.{name} {problem}; fix: {fix}")

    @classmethod
    def from_section(cls, section: Section, dim: int | None = None, backend: str | None = None) -> IndexConfig:
        """A validated config from a params section (missing keys take the defaults above). Every error is
        a ParamsError naming the full key. `dim`: the key dimension, to check `pq_bytes` against it.
        `backend`: the caller chooses the backend (e.g. `bench.backends`), so the section must not."""
        if backend is not None and "backend" in section.data:
            raise ParamsError(section.key("backend"), "is not read here (the backend is chosen elsewhere)",
                              f"remove it; valid keys: {', '.join(f.name for f in fields(cls) if f.name != 'backend')}")
        cfg = parse_config(cls, section)
        if backend is not None:
            cfg = replace(cfg, backend=backend)
        for name, problem, fix in cfg.problems(dim, every_backend=True):
            raise ParamsError(section.key(name), problem, fix)
        return cfg


class ExactIndex:
    """Dense float32 keys searched exhaustively. Storage grows by doubling, so a write costs amortised
    O(its own size), not a copy of everything stored (what `torch.cat` onto the full matrix costs);
    `capacity` reserves room up front. A search holds at most SEARCH_BLOCK similarities at once."""

    def __init__(self, dim: int, capacity: int = 0) -> None:
        self.dim, self.n = dim, 0
        self.buffer = torch.empty(capacity, dim)

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
        q = torch.from_numpy(np.ascontiguousarray(queries, dtype=np.float32))
        if len(q) * self.n <= SEARCH_BLOCK:
            sims, rows = (q @ self.keys.T).topk(k, dim=1)
            return sims.numpy(), rows.numpy()
        block = max(k, SEARCH_BLOCK // len(q))  # the first block is full, so it holds k candidates
        sims, rows = (q @ self.keys[:block].T).topk(k, dim=1)
        for lo in range(block, self.n, block):
            part_sims, part_rows = (q @ self.keys[lo : lo + block].T).topk(min(k, self.n - lo), dim=1)
            sims, at = torch.cat([sims, part_sims], 1).topk(k, dim=1)
            rows = torch.cat([rows, part_rows + lo], 1).gather(1, at)
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
            from dualmem.core.errors import DataError

            raise DataError(f"backend {cfg.backend!r} needs faiss; fix: {FAISS_INSTALL}") from exc
        self.faiss, self.dim, self.cfg = faiss, dim, cfg
        self.ivf = cfg.backend != "faiss_flat"
        if not self.ivf:
            self.index = faiss.IndexFlatIP(dim)
        else:
            l2 = faiss.METRIC_L2
            self.quantiser = faiss.IndexFlatL2(dim)
            if cfg.backend == "faiss_ivf":
                self.index = faiss.IndexIVFFlat(self.quantiser, dim, cfg.nlist, l2)
            elif cfg.pq_bits == 4:
                self.index = faiss.IndexIVFPQFastScan(self.quantiser, dim, cfg.nlist, cfg.pq_m, 4, l2)
                self.index.by_residual = False  # one look-up table per query, not one per bucket probed
            else:
                self.index = faiss.IndexIVFPQ(self.quantiser, dim, cfg.nlist, cfg.pq_m, 8, l2)
            self.index.nprobe = min(cfg.nprobe, cfg.nlist)
        self.pending: list[np.ndarray] = []

    def __len__(self) -> int:
        return int(self.index.ntotal) + sum(len(p) for p in self.pending)

    def set_nprobe(self, nprobe: int) -> None:
        self.index.nprobe = min(nprobe, self.cfg.nlist)

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
        scores, rows = self.index.search(np.ascontiguousarray(queries, dtype=np.float32), k)
        return (1.0 - scores / 2.0 if self.ivf else scores), rows

    def code_bytes(self) -> int:
        """Bytes of one stored key's vector or code, as FAISS stores it."""
        return int(self.index.code_size)

    def bytes_per_item(self) -> float:
        return float(self.code_bytes() + (ID_BYTES if self.ivf else 0))

    def padding_bytes(self) -> int:
        """Fast-scan lists hold whole blocks of 32 codes: the unused slots of each list's last block."""
        lists = self.faiss.downcast_InvertedLists(self.index.invlists) if self.ivf else None
        if not isinstance(lists, self.faiss.BlockInvertedLists):
            return 0
        sizes = np.array([lists.list_size(i) for i in range(lists.nlist)])
        blocks = int((-(-sizes // lists.n_per_block)).sum())
        return blocks * int(lists.block_size) - int(sizes.sum()) * self.code_bytes()

    def precomputed_table_bytes(self) -> int:
        table = getattr(self.index, "precomputed_table", None)
        return 4 * int(table.size()) if table is not None else 0

    def overhead_bytes(self) -> int:
        waiting = 4 * self.dim * sum(len(p) for p in self.pending)
        if not self.ivf:
            return waiting
        centroids = 4 * self.dim * int(self.cfg.nlist)
        codebooks = 4 * self.dim * (1 << self.cfg.pq_bits) if self.cfg.backend == "faiss_ivfpq" else 0
        return waiting + centroids + codebooks + self.padding_bytes() + self.precomputed_table_bytes()


def make_index(dim: int, cfg: IndexConfig, capacity: int = 0) -> ExactIndex | FaissIndex:
    """The index `cfg` describes, on keys of `dim`; `capacity`: room the exact index reserves up front."""
    cfg.check(dim)
    return ExactIndex(dim, capacity) if cfg.backend == "exact" else FaissIndex(dim, cfg)
