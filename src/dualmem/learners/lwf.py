"""`lwf`: Learning without Forgetting (Li & Hoiem 2017, TPAMI), in its class-incremental form with one
shared head (Hsu et al. 2018, "Re-evaluating Continual Learning Scenarios"; van de Ven & Tolias 2019,
"Three scenarios for continual learning"): the current task's inputs are replayed with the previous
model's soft targets over the classes seen before.

- Training (`observe`): from the second task on, a frozen copy of the model as it was when the task
  began (the previous model) gives soft targets on the batch; with D = T^2 * KL(softmax(old[:, O] / T)
  || softmax(new[:, O] / T)), O = the classes seen before this task, T the temperature, KL averaged
  over the batch, the loss is
  - `weighting: by_task` (van de Ven & Tolias 2019, whose class-IL split MNIST number we check
    against): (1/t) * CE(batch, over the classes seen so far) + (1 - 1/t) * D at the t-th task;
  - `weighting: fixed` (Li & Hoiem 2017): CE(batch, over all classes) + lam * D.
- Class-incremental prediction: argmax of the softmax over all classes of the one head (HeadLearner).
- Memory: the weights only. The frozen copy exists only while a task is trained (built in
  `before_task` from the current weights, dropped in `after_task`), so nothing else is kept between
  tasks; while training it doubles the parameters held. No stored items.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from dualmem.core.params import param
from dualmem.data.stream import Task
from dualmem.learners.common.base import LearnerContext
from dualmem.learners.common.head import HeadConfig, HeadLearner


@dataclass(frozen=True)
class LwFConfig(HeadConfig):
    lam: float = param(1.0, minimum=0.0)  # `fixed` weighting: Li & Hoiem 2017, lambda_o = 1
    temperature: float = param(2.0, minimum=1e-6)  # Li & Hoiem 2017 (after Hinton et al. 2015): T = 2
    weighting: str = param("by_task", choices=("by_task", "fixed"))  # see the module docstring


def distillation(new_logits: torch.Tensor, old_logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """T^2 * KL(softmax(old / T) || softmax(new / T)), averaged over the batch."""
    old_log = F.log_softmax(old_logits / temperature, dim=1)
    new_log = F.log_softmax(new_logits / temperature, dim=1)
    return temperature ** 2 * F.kl_div(new_log, old_log, reduction="batchmean", log_target=True)


class LwFLearner(HeadLearner):
    name = "lwf"
    Config = LwFConfig

    def __init__(self, cfg: LwFConfig, ctx: LearnerContext) -> None:
        super().__init__(cfg, ctx)
        self.old_model: nn.Module | None = None  # the previous model, only while a task is trained
        self.old_classes = torch.empty(0, dtype=torch.long)

    def before_task(self, task: Task) -> None:
        previous = sorted(self.visible_classes)
        super().before_task(task)
        self.old_model = None
        if self.tasks_seen > 0 and previous:
            self.old_model = copy.deepcopy(nn.Sequential(self.encoder, self.head)).eval()
            self.old_model.requires_grad_(False)
            self.old_classes = torch.tensor(previous)

    def observe(self, x: torch.Tensor, y: torch.Tensor, ids: np.ndarray) -> None:
        logits = self.logits(x)
        by_task = self.cfg.weighting == "by_task"
        if by_task:  # CE over the classes seen so far only (van de Ven's "active classes")
            unseen = torch.ones(logits.shape[1], dtype=torch.bool)
            unseen[sorted(self.visible_classes)] = False
            loss = F.cross_entropy(logits.masked_fill(unseen, float("-inf")), y)
        else:
            loss = F.cross_entropy(logits, y)
        if self.old_model is not None:
            with torch.no_grad():
                old = self.old_model(x)[:, self.old_classes]
            distill = distillation(logits[:, self.old_classes], old, self.cfg.temperature)
            t = self.tasks_seen + 1  # this task's number
            loss = loss / t + (1 - 1 / t) * distill if by_task else loss + self.cfg.lam * distill
        self.step(loss, len(y))

    def after_task(self, task: Task) -> None:
        super().after_task(task)
        self.old_model = None
        self.old_classes = torch.empty(0, dtype=torch.long)
