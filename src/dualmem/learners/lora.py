"""`lora`: low-rank adapters on a frozen base (Hu et al. 2021, "LoRA: Low-Rank Adaptation of Large
Language Models"), the parameter-efficient fine-tuning mitigation of forgetting, on the MLP.

- Base: the stream's encoder, frozen (a copy; never trained).
- Each task t gets its own adapters on every Linear layer l of the encoder — W_l + (alpha / r) B_t,l A_t,l,
  A random-init (Kaiming-uniform as in the official loralib), B zero-init (so the adapted network starts
  as the base) — and its own head rows for the task's classes, trained together with Adam (a fresh
  optimiser per task) by cross-entropy over the task's classes only. Earlier tasks' adapters and heads
  are never touched again, so nothing a task learned is overwritten.
- Class-incremental prediction (no task label at test time): every adapter set is run, each gives
  logits over its own task's classes (head_t on the adapted encoder's output); the prediction is the
  argmax over the concatenation of all tasks' own-class logits (task identity is inferred by the
  highest logit); probabilities = softmax over that concatenation (classes of no task get 0).
- `features(x)`: the concatenation [h_1(x), ..., h_T(x)] of every task's adapted encoder output
  (T * out_dim values; the base encoder's output before the first task). Prediction is a linear
  readout (block-diagonal heads) of exactly this vector, so every capability (default few-shot rows,
  K ∪ U rows, MSP novelty) reads the network it predicts with; the base output alone cannot give
  the prediction, because adapters act on every layer from the input up.
- Recall (Test 5): a new adapter set and a new n_targets head on the frozen base, trained online in
  one pass (the LoRA counterpart of finetune's online rule); charged base + adapter + head.
- Memory: base encoder params + every task's adapters + heads; no stored items.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from dualmem.core.optim import Adam, adam
from dualmem.core.params import param
from dualmem.core.seeding import seeded_generator
from dualmem.data.stream import Task
from dualmem.encoders import Encoder
from dualmem.evals.recall_networks import online_recall
from dualmem.evals.recall_protocol import RecallOutcome, RecallParams, RecallStream
from dualmem.learners.common.base import Learner, LearnerContext, parameter_cost
from dualmem.learners.common.head import HeadConfig


@dataclass(frozen=True)
class LoraConfig(HeadConfig):
    # epochs / lr / batch_size as finetune (Hsu et al. 2018: Adam, 4 epochs, lr 1e-3, batch 128)
    rank: int = param(8, minimum=1)  # r = 8 (Hu et al. 2021, RoBERTa/DeBERTa GLUE runs)
    alpha: float = param(16.0, minimum=0.0)  # scaling alpha / r = 2 (the usual loralib / PEFT setting)


class LoraAdapters(nn.Module):
    """One task's rank-r adapters (A_l: r x in, B_l: out x r) for every Linear layer of a base MLP."""

    def __init__(self, base: Encoder, rank: int, generator: torch.Generator) -> None:
        super().__init__()
        linears = [m for m in base.net if isinstance(m, nn.Linear)]
        self.A = nn.ParameterList()
        self.B = nn.ParameterList()
        for layer in linears:
            a = torch.empty(rank, layer.in_features)
            # loralib: nn.init.kaiming_uniform_(lora_A, a=sqrt(5)) -> U(-1/sqrt(in), 1/sqrt(in))
            bound = 1.0 / math.sqrt(layer.in_features)
            a.uniform_(-bound, bound, generator=generator)
            self.A.append(nn.Parameter(a))
            self.B.append(nn.Parameter(torch.zeros(layer.out_features, rank)))


class AdaptedEncoder(nn.Module):
    """The frozen base with one adapter set: the network of one task (or of the recall stream)."""

    def __init__(self, base: Encoder, adapters: LoraAdapters, scaling: float) -> None:
        super().__init__()
        self.base, self.adapters, self.scaling = base, adapters, scaling
        self.out_dim = base.out_dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, i = x, 0
        for module in self.base.net:
            if isinstance(module, nn.Linear):
                low_rank = F.linear(F.linear(h, self.adapters.A[i]), self.adapters.B[i])  # h A^T B^T
                h = F.linear(h, module.weight, module.bias) + self.scaling * low_rank
                i += 1
            else:
                h = module(h)
        return h


def frozen_copy(encoder: Encoder) -> Encoder:
    base = copy.deepcopy(encoder).eval()
    base.requires_grad_(False)
    return base


class LoraLearner(Learner):
    name = "lora"
    Config = LoraConfig

    def __init__(self, cfg: LoraConfig, ctx: LearnerContext) -> None:
        super().__init__(cfg, ctx)
        self.base = frozen_copy(ctx.encoder)
        self.scaling = cfg.alpha / cfg.rank
        self.adapters = nn.ModuleList()  # one LoraAdapters per task
        self.heads = nn.ModuleList()  # one Linear(out_dim, |task classes|) per task
        self.task_classes: list[list[int]] = []
        self.local = torch.full((ctx.n_classes,), -1, dtype=torch.long)  # global -> current task's label
        self.optimiser: Adam | None = None

    # -- the stream ---------------------------------------------------------------------------
    def new_task_modules(self, classes: list[int], generator: torch.Generator) -> None:
        self.adapters.append(LoraAdapters(self.base, self.cfg.rank, generator))
        head = nn.Linear(self.base.out_dim, len(classes))
        bound = 1.0 / math.sqrt(self.base.out_dim)  # nn.Linear's default init, from our generator
        with torch.no_grad():
            head.weight.uniform_(-bound, bound, generator=generator)
            head.bias.uniform_(-bound, bound, generator=generator)
        self.heads.append(head)
        self.task_classes.append(list(classes))

    def before_task(self, task: Task) -> None:
        super().before_task(task)
        classes = sorted(task.classes)
        self.new_task_modules(classes, seeded_generator(self.name, self.ctx.seed, task.stream, task.index))
        self.local = torch.full((self.ctx.n_classes,), -1, dtype=torch.long)
        self.local[torch.tensor(classes)] = torch.arange(len(classes))
        self.optimiser = adam([*self.adapters[-1].parameters(), *self.heads[-1].parameters()], self.cfg.lr)

    def after_task(self, task: Task) -> None:
        super().after_task(task)
        self.optimiser = None

    def network(self, t: int) -> AdaptedEncoder:
        return AdaptedEncoder(self.base, self.adapters[t], self.scaling)

    def observe(self, x: torch.Tensor, y: torch.Tensor, ids: np.ndarray) -> None:
        """Cross-entropy over the current task's classes, through its adapters and head only."""
        assert self.optimiser is not None, "observe() outside a task"
        loss = F.cross_entropy(self.heads[-1](self.network(-1)(x)), self.local[y])
        self.optimiser.zero_grad()
        loss.backward()
        self.optimiser.step()
        self.samples_trained += len(y)

    # -- capabilities -------------------------------------------------------------------------
    @torch.no_grad()
    def features(self, x: torch.Tensor) -> torch.Tensor:
        if not self.adapters:
            return self.base.encode(x)
        return torch.cat([self.network(t)(x) for t in range(len(self.adapters))], dim=1)

    @torch.no_grad()
    def logits_from_features(self, feats: torch.Tensor) -> torch.Tensor:
        """Each task's own-class logits at its classes' places; -inf for classes of no task."""
        if not self.heads:
            return torch.zeros(len(feats), self.ctx.n_classes)
        out = torch.full((len(feats), self.ctx.n_classes), -math.inf)
        width = self.base.out_dim
        for t, (head, classes) in enumerate(zip(self.heads, self.task_classes, strict=True)):
            out[:, classes] = head(feats[:, t * width : (t + 1) * width])
        return out

    @torch.no_grad()
    def proba_from_features(self, feats: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.logits_from_features(feats), dim=1)

    def recall(self, stream: RecallStream, cfg: RecallParams, progress: bool = False) -> RecallOutcome:
        """A new adapter set (and head) on the frozen base, trained online in one pass."""
        adapters = LoraAdapters(self.base, self.cfg.rank, seeded_generator(self.name, "recall", stream.seed))
        network = AdaptedEncoder(self.base, adapters, self.scaling)  # what online_recall needs of an Encoder
        return online_recall(network, stream, cfg, progress)  # type: ignore[arg-type]

    # -- state --------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "task_classes": [list(c) for c in self.task_classes],
                "adapters": [a.state_dict() for a in self.adapters], "heads": [h.state_dict() for h in self.heads]}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self.adapters, self.heads, self.task_classes = nn.ModuleList(), nn.ModuleList(), []
        generator = torch.Generator()  # the init is overwritten by the saved tensors
        for classes, adapters, head in zip(state["task_classes"], state["adapters"], state["heads"], strict=True):
            self.new_task_modules(list(classes), generator)
            self.adapters[-1].load_state_dict(adapters)
            self.heads[-1].load_state_dict(head)

    def memory_cost(self) -> dict[str, int]:
        return parameter_cost(self.base, self.adapters, self.heads)
