"""Fast episodic memory: one-shot writes of L2-normalised feature vectors with their labels, and a
similarity-weighted k-nearest-neighbour readout.

With an item budget, a full memory evicts from its largest class the oldest item (class-balanced
FIFO), so every class keeps an equal share. Items written from the stream keep their id into the
training set, so a saved state need not carry the vectors (they are re-encoded on load).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch.nn import functional as F

QUERY_CHUNK = 1024
KEY_STORAGE = ("float32", "float16", "int8")  # how stored keys are kept (values rounded to it on write)


def stored_key_bytes(dim: int, storage: str) -> int:
    """Bytes of one stored key: float32/float16 values, or int8 codes with one float32 scale."""
    return {"float32": 4 * dim, "float16": 2 * dim, "int8": dim + 4}[storage]


def round_to_storage(keys: torch.Tensor, storage: str) -> torch.Tensor:
    """Keys as they read back after being stored in `storage` (float32 compute copy)."""
    if storage == "float16":
        return keys.half().float()
    if storage == "int8":
        scale = keys.abs().amax(dim=1, keepdim=True).clamp_min(1e-12) / 127.0
        return (keys / scale).round().clamp(-127, 127) * scale
    return keys


def class_means(keys: torch.Tensor, labels: torch.Tensor, classes: list[int], n_classes: int) -> torch.Tensor:
    """(len(classes), dim) mean of the keys of each class (zeros for a class with no key)."""
    onehot = F.one_hot(labels, n_classes).float()[:, classes]
    return (onehot.T @ keys) / onehot.sum(0).clamp_min(1).unsqueeze(1)


@dataclass
class Readout:
    probs: torch.Tensor  # (n, n_classes)
    familiarity: torch.Tensor  # (n,) mean cosine similarity of the k nearest items
    kth_similarity: torch.Tensor  # (n,) cosine similarity of the k-th nearest item


class EpisodicMemory:
    def __init__(self, dim: int, n_classes: int, k: int, temperature: float, budget: int | None = None,
                 storage: str = "float32"):
        self.dim, self.n_classes, self.k, self.temperature, self.budget = dim, n_classes, k, temperature, budget
        self.storage = storage
        self.keys = torch.empty(0, dim)
        self.labels = torch.empty(0, dtype=torch.long)
        self.ids = np.empty(0, dtype=np.int64)
        self.written_at = np.empty(0, dtype=np.int64)
        self.clock = 0

    def __len__(self) -> int:
        return len(self.labels)

    def write(self, features: torch.Tensor, labels: torch.Tensor, ids: np.ndarray | None = None) -> None:
        """One-shot write; `ids` are the items' indices in the training set (-1 where none). Over the
        budget, the evicted rows are chosen first, so only the surviving new keys are ever stored."""
        n, old = len(labels), len(self)
        ids = np.full(n, -1, dtype=np.int64) if ids is None else np.asarray(ids, dtype=np.int64)
        self.labels = torch.cat([self.labels, labels.long()])
        self.ids = np.concatenate([self.ids, ids])
        self.written_at = np.concatenate([self.written_at, self.clock + np.arange(n)])
        self.clock += n
        keep = self._survivors()
        if keep is None:
            kept_keys, new_keys = self.keys, self.stored(features)
        else:
            kept_keys = self.keys[torch.from_numpy(np.flatnonzero(keep[:old]))]
            new_keys = self.stored(features[torch.from_numpy(np.flatnonzero(keep[old:]))])
            rows = torch.from_numpy(np.flatnonzero(keep))
            self.labels, self.ids, self.written_at = self.labels[rows], self.ids[keep], self.written_at[keep]
        self.keys = torch.cat([kept_keys, new_keys]) if len(kept_keys) else new_keys

    def stored(self, features: torch.Tensor) -> torch.Tensor:
        """Features as this memory keeps them: L2-normalised, rounded to its key storage."""
        return round_to_storage(F.normalize(features.detach().float(), dim=1), self.storage)

    def rekey(self, features: torch.Tensor) -> None:
        """Replace every stored key (e.g. re-encoded after the encoder changed); labels stay."""
        self.keys = self.stored(features)

    def _survivors(self) -> np.ndarray | None:
        """Rows kept by class-balanced FIFO eviction down to the budget (None: within it): the largest
        class (the lowest label on a tie) loses its oldest item, one item at a time."""
        if self.budget is None or len(self) <= self.budget:
            return None
        labels = self.labels.numpy()
        counts = np.bincount(labels, minlength=self.n_classes)
        for _ in range(len(self) - self.budget):
            counts[np.argmax(counts)] -= 1
        keep = np.zeros(len(self), dtype=bool)
        for label in np.flatnonzero(counts):
            rows = np.flatnonzero(labels == label)
            keep[rows[np.argsort(self.written_at[rows])[len(rows) - counts[label]:]]] = True
        return keep

    @torch.no_grad()
    def read(self, features: torch.Tensor, k: int | None = None) -> Readout:
        if len(self) == 0:
            raise RuntimeError("read from an empty episodic memory")
        k = min(k or self.k, len(self))
        queries = F.normalize(features.float(), dim=1)
        probs, familiarity, kth = [], [], []
        for start in range(0, len(queries), QUERY_CHUNK):
            sims, rows = (queries[start : start + QUERY_CHUNK] @ self.keys.T).topk(k, dim=1)
            weights = torch.softmax(sims / self.temperature, dim=1)
            p = torch.zeros(len(sims), self.n_classes).scatter_add_(1, self.labels[rows], weights)
            probs.append(p)
            familiarity.append(sims.mean(1))
            kth.append(sims[:, -1])
        return Readout(torch.cat(probs), torch.cat(familiarity), torch.cat(kth))

    @torch.no_grad()
    def self_familiarity(self, n_probe: int, generator: torch.Generator) -> torch.Tensor:
        """Leave-one-out familiarity of up to n_probe stored items: how familiar a stored item would
        look if it had not been stored. The readout gate is calibrated on it."""
        probe = torch.randperm(len(self), generator=generator)[:n_probe]
        k = min(self.k, len(self) - 1)
        if k < 1:
            return torch.ones(len(probe))
        sims = self.keys[probe] @ self.keys.T
        sims[torch.arange(len(probe)), probe] = -2.0
        return sims.topk(k, dim=1).values.mean(1)

    def class_balanced_rows(self, n: int, generator: torch.Generator) -> torch.Tensor:
        """n stored rows drawn with equal probability per stored class (uniform within a class)."""
        _, inverse, counts = torch.unique(self.labels, return_inverse=True, return_counts=True)
        weights = (1.0 / counts.float())[inverse]
        return torch.multinomial(weights, n, replacement=True, generator=generator)

    def nbytes(self) -> int:
        """Bytes the memory holds: its stored keys plus an int64 label per item."""
        return len(self) * (stored_key_bytes(self.dim, self.storage) + 8)

    def state_dict(self) -> dict[str, Any]:
        by_id = bool(len(self)) and bool((self.ids >= 0).all())
        return {
            "labels": self.labels,
            "ids": torch.from_numpy(self.ids),
            "written_at": torch.from_numpy(self.written_at),
            "clock": self.clock,
            "keys": None if by_id else self.keys,
        }

    def load_state_dict(self, state: dict[str, Any], encode_ids: Any) -> None:
        """`encode_ids(ids) -> features` re-creates keys for states saved by id."""
        self.labels = state["labels"]
        self.ids = state["ids"].numpy()
        self.written_at = state["written_at"].numpy()
        self.clock = int(state["clock"])
        if state["keys"] is not None:
            self.keys = state["keys"]
        elif len(self.ids):
            self.keys = self.stored(encode_ids(self.ids))
        else:
            self.keys = torch.empty(0, self.dim)
