"""`dualmem`: the dual-memory learner (complementary learning systems).

- Wake (`observe`): every item is written once to the fast episodic memory as the L2-normalised
  feature of the frozen encoder — no gradient step. The memory holds as many items as the memory
  budget buys at float32 keys (class-balanced FIFO eviction beyond that).
- Sleep (`sleep`, called by the consolidate stage after each task): the slow semantic memory is
  trained by class-balanced replay from the episodic memory with distillation toward its old self.
- Readout: a gate on familiarity (mean similarity of the k nearest stored items) trusts the episodic
  answer where the query is familiar and the semantic one elsewhere:
  p = g * p_episodic + (1 - g) * p_semantic,  g = sigmoid(sharpness * (familiarity - threshold)).
  The threshold is calibrated at each sleep: the `threshold_quantile` of the leave-one-out
  familiarity of stored items, so "familiar" means "as close as stored items are to each other".
- Capabilities it overrides: few-shot (shots written to a fresh episodic memory; generalised: to a
  copy of its memory), novelty (cosine distance to the `novelty_k`-th nearest stored item) and recall
  (a fresh episodic memory within the budget).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from dualmem.data.stream import Task
from dualmem.evals.recall_memory import knn_recall
from dualmem.evals.recall_protocol import RecallOutcome, RecallParams, RecallStream
from dualmem.learners.common.base import LABEL_BYTES, Learner, LearnerContext, parameter_cost
from dualmem.learners.common.readouts import Episodes, HeadFit, added_shots_scores, fresh_memory_scores
from dualmem.memory.episodic import EpisodicMemory
from dualmem.memory.semantic import ConsolidationParams, SemanticMemory
from dualmem.params import param
from dualmem.seeding import derive_seed, seeded_generator

CALIBRATION_PROBES = 2000


@dataclass(frozen=True)
class EpisodicConfig:
    k: int = param(minimum=1)
    temperature: float = param(minimum=1e-6)  # softmax temperature over the k cosine similarities


@dataclass(frozen=True)
class SemanticConfig:
    hidden: int = param(minimum=0)  # 0 = cosine-linear classifier on the features
    input_scale: float = param(minimum=1e-6)
    steps: int = param(minimum=0)  # replay steps per sleep
    batch_size: int = param(minimum=1)
    lr: float = param(minimum=0.0)
    distill_weight: float = param(minimum=0.0)
    distill_temperature: float = param(minimum=1e-6)


@dataclass(frozen=True)
class ReadoutConfig:
    threshold_quantile: float = param(minimum=0.0, maximum=1.0)
    sharpness: float = param(minimum=0.0)
    generalised: str = param("episodic", choices=("episodic", "full"))  # K ∪ U rule: episodic kNN or gated
    novelty_k: int = param(10, minimum=1)  # novelty = 1 - cosine similarity of the k-th nearest item


@dataclass(frozen=True)
class DualMemoryConfig:
    batch_size: int = param(minimum=1)  # write batch; every item is written exactly once
    episodic: EpisodicConfig = param()
    semantic: SemanticConfig = param()
    readout: ReadoutConfig = param()


class DualMemoryLearner(Learner):
    name = "dualmem"
    Config = DualMemoryConfig
    has_sleep = True

    def __init__(self, cfg: DualMemoryConfig, ctx: LearnerContext) -> None:
        super().__init__(cfg, ctx)
        self.encoder = ctx.encoder.eval()
        epi, sem = cfg.episodic, cfg.semantic
        self.episodic = EpisodicMemory(self.encoder.out_dim, ctx.n_classes, k=epi.k, temperature=epi.temperature,
                                       budget=ctx.item_capacity(self.feature_item_bytes(), self.name))
        torch.manual_seed(derive_seed("dualmem-semantic", ctx.seed))
        self.semantic = SemanticMemory(self.encoder.out_dim, ctx.n_classes, sem.hidden, sem.input_scale)
        self.consolidation = ConsolidationParams(steps=sem.steps, batch_size=sem.batch_size, lr=sem.lr,
                                                 distill_weight=sem.distill_weight,
                                                 distill_temperature=sem.distill_temperature)
        self.semantic.register_buffer("threshold", torch.tensor(1.0))

    def feature_item_bytes(self) -> int:
        return 4 * self.encoder.out_dim + LABEL_BYTES

    # -- wake and sleep -----------------------------------------------------------------------
    def observe(self, x: torch.Tensor, y: torch.Tensor, ids: np.ndarray) -> None:
        self.episodic.write(self.encoder.encode(x), y, ids)

    def write(self, x: torch.Tensor, y: torch.Tensor) -> None:
        """One-shot write of items outside the stream."""
        self.visible_classes |= set(torch.unique(y).tolist())
        self.episodic.write(self.encoder.encode(x), y)

    def sleep(self, task: Task) -> None:
        generator = seeded_generator("dualmem-sleep", self.ctx.seed, task.stream, task.index)
        self.semantic.consolidate(self.episodic, self.consolidation, generator)
        familiarity = self.episodic.self_familiarity(CALIBRATION_PROBES, generator)
        self.semantic.threshold.fill_(float(torch.quantile(familiarity, self.cfg.readout.threshold_quantile)))

    def wake_state_after_sleep(self, wake: dict[str, Any], slept: dict[str, Any] | None) -> dict[str, Any]:
        return wake if slept is None else {**wake, "semantic": slept["semantic"]}

    # -- readout ------------------------------------------------------------------------------
    def gate(self, familiarity: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.cfg.readout.sharpness * (familiarity - self.semantic.threshold))

    def gated(self, memory: EpisodicMemory, feats: torch.Tensor) -> torch.Tensor:
        readout = memory.read(feats)
        if not self.semantic.known.any():
            return readout.probs
        g = self.gate(readout.familiarity).unsqueeze(1)
        return g * readout.probs + (1 - g) * self.semantic.probs(feats)

    @torch.no_grad()
    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.encoder.encode(x)

    @torch.no_grad()
    def proba_from_features(self, feats: torch.Tensor) -> torch.Tensor:
        return self.gated(self.episodic, feats)

    @torch.no_grad()
    def fewshot_scores(self, episodes: Episodes, fit: HeadFit) -> torch.Tensor:
        """The shots written to a fresh episodic memory (this learner's k and temperature), read by kNN."""
        return fresh_memory_scores(episodes, self.episodic.k, self.episodic.temperature)

    @torch.no_grad()
    def generalised_scores(self, episodes: Episodes, known: list[int], fit: HeadFit) -> torch.Tensor:
        """U's shots written into a copy of the episodic memory; episodic kNN or the gated readout."""
        read = self.gated if self.cfg.readout.generalised == "full" else None
        return added_shots_scores(self.episodic, episodes, read)

    @torch.no_grad()
    def novelty_from_features(self, feats: torch.Tensor) -> torch.Tensor:
        k = min(self.cfg.readout.novelty_k, len(self.episodic))
        return 1.0 - self.episodic.read(feats, k=k).kth_similarity

    def recall(self, stream: RecallStream, cfg: RecallParams, progress: bool = False) -> RecallOutcome:
        return knn_recall(self.features, stream, cfg, self.episodic.budget, self.episodic.temperature, progress)

    def known_classes(self) -> set[int]:
        stored = set(torch.unique(self.episodic.labels).tolist())
        consolidated = set(self.semantic.known.nonzero().flatten().tolist())
        return super().known_classes() | stored | consolidated

    # -- state --------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "episodic": self.episodic.state_dict(),
                "semantic": self.semantic.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self.episodic.load_state_dict(
            state["episodic"], lambda ids: self.encoder.encode(self.ctx.train_x[torch.from_numpy(ids)])
        )
        self.semantic.load_state_dict(state["semantic"])

    def memory_cost(self) -> dict[str, int]:
        return parameter_cost(self.encoder, self.semantic, items=len(self.episodic),
                              item_bytes=self.episodic.nbytes())
