"""`dualmem`: the dual-memory learner (complementary learning systems).

- Wake (`observe`): every item is written once to the fast episodic memory as the L2-normalised
  feature of the frozen encoder — no gradient step.
- Sleep (`sleep`, called by the consolidate stage after each task): the slow semantic memory is
  trained by class-balanced replay from the episodic memory with distillation toward its old self.
- Readout: a gate on familiarity (mean similarity of the k nearest stored items) trusts the episodic
  answer where the query is familiar and the semantic one elsewhere:
  p = g * p_episodic + (1 - g) * p_semantic,  g = sigmoid(sharpness * (familiarity - threshold)).
  The threshold is calibrated at each sleep: the `threshold_quantile` of the leave-one-out
  familiarity of stored items, so "familiar" means "as close as stored items are to each other".
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from dualmem.data.stream import Task
from dualmem.learners.base import Learner, LearnerContext
from dualmem.memory.episodic import EpisodicMemory
from dualmem.memory.semantic import ConsolidationParams, SemanticMemory
from dualmem.params import Section
from dualmem.seeding import derive_seed, seeded_generator

CALIBRATION_PROBES = 2000


class DualMemoryLearner(Learner):
    name = "dualmem"
    has_sleep = True

    def __init__(self, cfg: Section, ctx: LearnerContext) -> None:
        super().__init__(cfg, ctx)
        self.validate(cfg)
        epi, sem, gate = cfg.section("episodic"), cfg.section("semantic"), cfg.section("readout")
        self.encoder = ctx.encoder.eval()
        self._batch_size = cfg.integer("batch_size", minimum=1)
        self.episodic = EpisodicMemory(
            self.encoder.out_dim, ctx.n_classes, k=epi.integer("k", minimum=1),
            temperature=epi.number("temperature", minimum=1e-6), budget=epi.optional_integer("budget", 1),
        )
        torch.manual_seed(derive_seed("dualmem-semantic", ctx.seed))
        self.semantic = SemanticMemory(self.encoder.out_dim, ctx.n_classes, sem.integer("hidden", minimum=0),
                                       sem.number("input_scale", minimum=1e-6))
        self.consolidation = ConsolidationParams(
            steps=sem.integer("steps", minimum=0), batch_size=sem.integer("batch_size", minimum=1),
            lr=sem.number("lr", minimum=0.0), distill_weight=sem.number("distill_weight", minimum=0.0),
            distill_temperature=sem.number("distill_temperature", minimum=1e-6),
        )
        self.threshold_quantile = gate.number("threshold_quantile", minimum=0.0, maximum=1.0)
        self.sharpness = gate.number("sharpness", minimum=0.0)
        self.semantic.register_buffer("threshold", torch.tensor(1.0))

    @classmethod
    def validate(cls, cfg: Section) -> None:
        cfg.integer("batch_size", minimum=1)
        epi, sem, gate = cfg.section("episodic"), cfg.section("semantic"), cfg.section("readout")
        epi.integer("k", minimum=1)
        epi.number("temperature", minimum=1e-6)
        epi.optional_integer("budget", 1)
        for key in ("hidden", "steps"):
            sem.integer(key, minimum=0)
        sem.integer("batch_size", minimum=1)
        for key in ("lr", "distill_weight"):
            sem.number(key, minimum=0.0)
        sem.number("distill_temperature", minimum=1e-6)
        sem.number("input_scale", minimum=1e-6)
        gate.number("threshold_quantile", minimum=0.0, maximum=1.0)
        gate.number("sharpness", minimum=0.0)

    @property
    def batch_size(self) -> int:
        return self._batch_size

    # -- wake and sleep -----------------------------------------------------------------------
    def observe(self, x: torch.Tensor, y: torch.Tensor, ids: np.ndarray) -> None:
        self.episodic.write(self.encoder.encode(x), y, ids)

    def write(self, x: torch.Tensor, y: torch.Tensor) -> None:
        """One-shot write of items outside the stream (few-shot support sets, recall streams)."""
        self.visible_classes |= set(torch.unique(y).tolist())
        self.episodic.write(self.encoder.encode(x), y)

    def sleep(self, task: Task) -> None:
        generator = seeded_generator("dualmem-sleep", self.ctx.seed, task.stream, task.index)
        self.semantic.consolidate(self.episodic, self.consolidation, generator)
        familiarity = self.episodic.self_familiarity(CALIBRATION_PROBES, generator)
        self.semantic.threshold.fill_(float(torch.quantile(familiarity, self.threshold_quantile)))

    def wake_state_after_sleep(self, wake: dict[str, Any], slept: dict[str, Any] | None) -> dict[str, Any]:
        return wake if slept is None else {**wake, "semantic": slept["semantic"]}

    # -- readout ------------------------------------------------------------------------------
    def gate(self, familiarity: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.sharpness * (familiarity - self.semantic.threshold))

    @torch.no_grad()
    def predict_proba(self, x: torch.Tensor) -> torch.Tensor:
        feats = self.encoder.encode(x)
        readout = self.episodic.read(feats)
        if not self.semantic.known.any():
            return readout.probs
        g = self.gate(readout.familiarity).unsqueeze(1)
        return g * readout.probs + (1 - g) * self.semantic.probs(feats)

    @torch.no_grad()
    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.encoder.encode(x)

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
        n_params = self.semantic.n_params() + sum(p.numel() for p in self.encoder.parameters())
        return {"params": n_params, "param_bytes": 4 * n_params, "items": len(self.episodic),
                "item_bytes": self.episodic.nbytes()}
