"""An item buffer for replay learners: stored raw items, referred to by their row in the training set
(a saved state holds ids, not images), charged as uint8 images plus labels, plus any per-item extras
(e.g. DER++'s logits, charged as float32).

Policies: `reservoir` (every item of the stream has the same chance to be kept; Vitter's algorithm R,
as in Mammoth's ER) and `balanced` (a full buffer evicts a random item of its largest class; GDumb's
greedy class-balanced sampler). Capacity comes from the memory budget in bytes.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from dualmem.learners.common.base import LearnerContext

POLICIES = ("reservoir", "balanced")


class Buffer:
    def __init__(self, ctx: LearnerContext, who: str, policy: str = "reservoir",
                 extras: dict[str, int] | None = None) -> None:
        """`extras`: name -> float32 values per item (e.g. {"logits": n_classes}), stored beside each item."""
        if policy not in POLICIES:
            raise ValueError(f"buffer policy {policy!r} not in {POLICIES}")
        self.ctx, self.policy, self.extra_dims = ctx, policy, dict(extras or {})
        self.item_bytes = ctx.raw_item_bytes + 4 * sum(self.extra_dims.values())
        self.capacity = ctx.item_capacity(self.item_bytes, who)
        self.ids = torch.empty(0, dtype=torch.long)
        self.labels = torch.empty(0, dtype=torch.long)
        self.extras = {k: torch.empty(0, d) for k, d in self.extra_dims.items()}
        self.n_seen = 0
        self.offered = np.zeros(len(ctx.train_x), dtype=bool)  # each stream item is offered once, epochs aside
        self.rng = np.random.default_rng([ctx.seed, 11])

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def full(self) -> bool:
        return self.capacity is not None and len(self) >= self.capacity

    def add(self, ids: np.ndarray, labels: torch.Tensor, **extras: torch.Tensor) -> None:
        """Offer a batch of stream items to the buffer; each item is offered once (later epochs skip it) and
        kept or not by the policy."""
        for i in range(len(labels)):
            if self.offered[ids[i]]:
                continue
            self.offered[ids[i]] = True
            self.n_seen += 1
            slot = self._slot(int(labels[i]))
            if slot is None:
                continue
            row = {k: v[i : i + 1].detach().float() for k, v in extras.items()}
            if slot == len(self):
                self.ids = torch.cat([self.ids, torch.tensor([int(ids[i])])])
                self.labels = torch.cat([self.labels, labels[i : i + 1].long()])
                for k in self.extras:
                    self.extras[k] = torch.cat([self.extras[k], row[k]])
            else:
                self.ids[slot], self.labels[slot] = int(ids[i]), labels[i]
                for k in self.extras:
                    self.extras[k][slot] = row[k][0]

    def _slot(self, label: int) -> int | None:
        """Where the next item goes: len(self) = append, an index = replace, None = not kept."""
        if not self.full:
            return len(self)
        if self.policy == "reservoir":
            j = int(self.rng.integers(0, self.n_seen))
            return j if j < len(self) else None
        counts = torch.bincount(self.labels, minlength=self.ctx.n_classes)
        largest = int(counts.argmax())
        if counts[label] >= counts[largest]:
            return None
        rows = torch.nonzero(self.labels == largest).flatten()
        return int(rows[int(self.rng.integers(0, len(rows)))])

    def x(self, rows: torch.Tensor | None = None) -> torch.Tensor:
        """Inputs of the stored items (all, or `rows`)."""
        ids = self.ids if rows is None else self.ids[rows]
        return self.ctx.train_x[ids]

    def sample(self, n: int, generator: torch.Generator) -> torch.Tensor:
        """Rows of up to n stored items drawn uniformly without replacement (empty if the buffer is)."""
        if len(self) == 0:
            return torch.empty(0, dtype=torch.long)
        return torch.randperm(len(self), generator=generator)[:n]

    def nbytes(self) -> int:
        return len(self) * self.item_bytes

    def state_dict(self) -> dict[str, Any]:
        return {"ids": self.ids, "labels": self.labels, "extras": dict(self.extras), "n_seen": self.n_seen,
                "offered": torch.from_numpy(self.offered), "rng": self.rng.bit_generator.state}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.ids, self.labels = state["ids"], state["labels"]
        self.extras = dict(state["extras"])
        self.n_seen = int(state["n_seen"])
        self.offered = state["offered"].numpy().copy()
        self.rng.bit_generator.state = state["rng"]
