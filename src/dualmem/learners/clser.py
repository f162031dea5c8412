"""`clser`: CLS-ER, complementary learning system based experience replay (Arani, Sarfraz & Zonooz,
"Learning Fast, Learning Slow", ICLR 2022; NeurAI-Lab/CLS-ER).

- Working model (encoder + head, trained by `observe`): cross-entropy on the stream batch together
  with a batch replayed from a reservoir buffer (within the memory budget), plus the consistency loss
  reg_weight * MSE(working logits on the replayed items, semantic logits), where for each replayed
  item the semantic logits are those of the plastic or the stable model, whichever gives its true
  label the higher softmax probability.
- Semantic memories: after every step the plastic model is updated with probability r_p and the
  stable one with probability r_s, each as an exponential moving average of the working model with
  decay min(1 - 1/(step + 1), alpha) (warm-up), alpha_p < alpha_s making the plastic one faster.
- Prediction (class-incremental): the stable model's softmax over all classes; its encoder gives the
  features of every other capability (few-shot, novelty, recall and transfer use the head-based rules
  on the stable model).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from dualmem.core.params import param
from dualmem.core.seeding import seeded_generator
from dualmem.data.stream import Task
from dualmem.evals.recall_networks import online_recall
from dualmem.evals.recall_protocol import RecallOutcome, RecallParams, RecallStream
from dualmem.learners.common.base import LearnerContext, parameter_cost
from dualmem.learners.common.buffer import Buffer
from dualmem.learners.common.head import HeadConfig, HeadLearner


@dataclass(frozen=True)
class CLSERConfig(HeadConfig):
    # optimiser: the suite's Adam settings (HeadConfig); the paper's S-MNIST runs use SGD, batch 10, 1 epoch.
    # Defaults below: NeurAI-Lab/CLS-ER utils/best_args.py, seq-mnist, buffer 5120.
    replay_batch_size: int = param(minimum=1)  # minibatch_size: replayed items per step
    reg_weight: float = param(minimum=0.0)  # lambda of the consistency loss
    plastic_update_freq: float = param(minimum=0.0, maximum=1.0)  # r_p
    plastic_alpha: float = param(minimum=0.0, maximum=1.0)  # alpha_p
    stable_update_freq: float = param(minimum=0.0, maximum=1.0)  # r_s
    stable_alpha: float = param(minimum=0.0, maximum=1.0)  # alpha_s


class CLSERLearner(HeadLearner):
    name = "clser"
    Config = CLSERConfig

    def __init__(self, cfg: CLSERConfig, ctx: LearnerContext) -> None:
        super().__init__(cfg, ctx)
        self.plastic = copy.deepcopy(nn.Sequential(self.encoder, self.head)).eval().requires_grad_(False)
        self.stable = copy.deepcopy(nn.Sequential(self.encoder, self.head)).eval().requires_grad_(False)
        self.buffer = Buffer(ctx, self.name, policy="reservoir")
        self.global_step = 0
        self.generator: torch.Generator | None = None

    # -- training -----------------------------------------------------------------------------
    def before_task(self, task: Task) -> None:
        super().before_task(task)
        self.generator = seeded_generator(self.name, self.ctx.seed, task.stream, task.index)

    def after_task(self, task: Task) -> None:
        super().after_task(task)
        self.generator = None

    def observe(self, x: torch.Tensor, y: torch.Tensor, ids: np.ndarray) -> None:
        assert self.generator is not None, "observe() outside a task"
        n = len(y)
        rows = self.buffer.sample(self.cfg.replay_batch_size, self.generator)
        if len(rows):
            bx, by = self.buffer.x(rows), self.buffer.labels[rows]
            semantic = self.semantic_logits(bx, by)
            x, y = torch.cat([x, bx]), torch.cat([y, by])
        logits = self.logits(x)
        loss = F.cross_entropy(logits, y)
        if len(rows):
            loss = loss + self.cfg.reg_weight * F.mse_loss(logits[n:], semantic)
        self.step(loss, len(y))
        self.buffer.add(ids, y[:n])
        self.global_step += 1
        draws = torch.rand(2, generator=self.generator)
        if draws[0] < self.cfg.plastic_update_freq:
            self.ema_update(self.plastic, self.cfg.plastic_alpha)
        if draws[1] < self.cfg.stable_update_freq:
            self.ema_update(self.stable, self.cfg.stable_alpha)

    @torch.no_grad()
    def semantic_logits(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Per item, the stable or the plastic model's logits: whichever gives label y the higher softmax."""
        stable, plastic = self.stable(x), self.plastic(x)
        true = torch.arange(len(y)), y
        use_stable = torch.softmax(stable, 1)[true] > torch.softmax(plastic, 1)[true]
        return torch.where(use_stable.unsqueeze(1), stable, plastic)

    @torch.no_grad()
    def ema_update(self, model: nn.Module, alpha: float) -> None:
        decay = min(1 - 1 / (self.global_step + 1), alpha)
        ema = list(model.parameters())
        torch._foreach_mul_(ema, decay)
        torch._foreach_add_(ema, self.parameters(), alpha=1 - decay)

    # -- capabilities: the stable model -------------------------------------------------------
    @torch.no_grad()
    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.stable[0].encode(x)

    @torch.no_grad()
    def logits_from_features(self, feats: torch.Tensor) -> torch.Tensor:
        return self.stable[1](feats)

    def output_layer(self) -> nn.Linear:
        return self.stable[1]

    def recall(self, stream: RecallStream, cfg: RecallParams, progress: bool = False) -> RecallOutcome:
        """A copy of the stable model's encoder with a new head, trained online in one pass."""
        return online_recall(self.stable[0], stream, cfg, progress)

    def known_classes(self) -> set[int]:
        return super().known_classes() | set(torch.unique(self.buffer.labels).tolist())

    # -- state --------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "plastic": self.plastic.state_dict(), "stable": self.stable.state_dict(),
                "buffer": self.buffer.state_dict(), "global_step": self.global_step}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self.plastic.load_state_dict(state["plastic"])
        self.stable.load_state_dict(state["stable"])
        self.buffer.load_state_dict(state["buffer"])
        self.global_step = int(state["global_step"])

    def kept_items(self) -> tuple[torch.Tensor, torch.Tensor]:
        return self.buffer.ids, self.buffer.labels

    def memory_cost(self) -> dict[str, int]:
        """Working, plastic and stable models, and the buffer."""
        return parameter_cost(self.encoder, self.head, self.plastic, self.stable, items=len(self.buffer),
                              item_bytes=self.buffer.nbytes())
