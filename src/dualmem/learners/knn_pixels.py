"""`knn_pixels`: a memory of raw images read by k nearest neighbours — the trivial episodic baseline
that every memory-based learner must beat at equal bytes: the episodic kNN readout of `dualmem` with
no encoder at all (the classic non-parametric nearest-neighbour classifier on pixels).

- Stream (`observe`): every item is written once to an episodic memory of its pixels (the items are
  the stream's uint8 images, kept by training-set id and charged `raw_item_bytes` each: image + label;
  the float copies are a cache re-made from the images). The memory holds as many items as the
  budget buys; beyond that a write evicts the oldest item of the largest class (class-balanced FIFO,
  `dualmem.memory.episodic.EpisodicMemory`). No parameter, no gradient step.
- Class-incremental prediction: the k most cosine-similar stored items (pixels L2-normalised),
  weighted by softmax(similarity / temperature), vote for their labels: probabilities = the summed
  weights per class (0 for classes with no neighbour among the k); prediction = argmax.
- `features(x)` = the pixels x themselves.
- Few-shot: the shots written to a fresh memory (k = min(k, shots)); K ∪ U: the shots added to a copy
  of its memory (within the same budget). Novelty: 1 - cosine similarity of the `novelty_k`-th nearest
  stored item. Recall: a fresh pixel memory within the budget (the base rule), charged raw bytes.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import torch

from dualmem.core.params import param
from dualmem.evals.recall_memory import knn_recall
from dualmem.evals.recall_protocol import RecallOutcome, RecallParams, RecallStream
from dualmem.learners.common.base import LABEL_BYTES, Learner, LearnerContext
from dualmem.learners.common.readouts import Episodes, HeadFit, added_shots_scores, fresh_memory_scores
from dualmem.memory.episodic import EpisodicMemory


@dataclass(frozen=True)
class KnnPixelsConfig:
    # k, temperature and novelty_k as dualmem's episodic memory (equal readout, only the keys differ)
    batch_size: int = param(512, minimum=1)  # write batch; every item is written exactly once
    k: int = param(10, minimum=1)
    temperature: float = param(0.05, minimum=1e-6)  # softmax temperature over the k cosine similarities
    novelty_k: int = param(10, minimum=1)  # novelty = 1 - cosine similarity of the k-th nearest item


class KnnPixelsLearner(Learner):
    name = "knn_pixels"
    Config = KnnPixelsConfig

    def __init__(self, cfg: KnnPixelsConfig, ctx: LearnerContext) -> None:
        super().__init__(cfg, ctx)
        self.memory = EpisodicMemory(ctx.train_x.shape[1], ctx.n_classes, k=cfg.k, temperature=cfg.temperature,
                                     budget=ctx.item_capacity(self.feature_item_bytes(), self.name))

    def feature_item_bytes(self) -> int:
        """The stored features are the uint8 images themselves: one raw item each."""
        return self.ctx.raw_item_bytes

    def observe(self, x: torch.Tensor, y: torch.Tensor, ids: np.ndarray) -> None:
        self.memory.write(x, y, ids)

    # -- capabilities -------------------------------------------------------------------------
    @torch.no_grad()
    def features(self, x: torch.Tensor) -> torch.Tensor:
        return x

    @torch.no_grad()
    def proba_from_features(self, feats: torch.Tensor) -> torch.Tensor:
        if len(self.memory) == 0:
            return torch.full((len(feats), self.ctx.n_classes), 1.0 / self.ctx.n_classes)
        return self.memory.read(feats).probs

    @torch.no_grad()
    def fewshot_scores(self, episodes: Episodes, fit: HeadFit) -> torch.Tensor:
        """The shots written to a fresh memory (this learner's k and temperature), read by kNN."""
        return fresh_memory_scores(episodes, self.cfg.k, self.cfg.temperature)

    @torch.no_grad()
    def generalised_scores(self, episodes: Episodes, known: list[int], fit: HeadFit) -> torch.Tensor:
        """U's shots written into a copy of the memory (same budget), read by kNN over K ∪ U."""
        return added_shots_scores(self.memory, episodes)

    @torch.no_grad()
    def novelty_from_features(self, feats: torch.Tensor) -> torch.Tensor:
        return 1.0 - self.memory.read(feats, k=min(self.cfg.novelty_k, len(self.memory))).kth_similarity

    def recall(self, stream: RecallStream, cfg: RecallParams, progress: bool = False) -> RecallOutcome:
        """A fresh pixel memory within the budget; each item charged as the raw image it is."""
        capacity = self.ctx.item_capacity(self.feature_item_bytes(), self.name)
        out = knn_recall(self.features, stream, cfg, capacity, self.cfg.temperature, progress)
        return replace(out, bytes_per_item=float(stream.cues.shape[1] + LABEL_BYTES))

    def known_classes(self) -> set[int]:
        return super().known_classes() | set(torch.unique(self.memory.labels).tolist())

    # -- state --------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "memory": self.memory.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self.memory.load_state_dict(state["memory"], lambda ids: self.ctx.train_x[torch.from_numpy(ids)])

    def memory_cost(self) -> dict[str, int]:
        n = len(self.memory)
        return {"params": 0, "param_bytes": 0, "items": n, "item_bytes": n * self.ctx.raw_item_bytes}
