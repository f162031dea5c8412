"""`si`: Synaptic Intelligence (Zenke, Poole & Ganguli 2017, "Continual Learning Through Synaptic
Intelligence", ICML), as run by Hsu et al. 2018 ("Re-evaluating Continual Learning Scenarios") on
class-incremental split MNIST.

- Training (`observe`): cross-entropy over the single 10-way head (as `finetune`) plus the surrogate
  c * sum_i Omega_i (theta_i - theta*_i)^2. Online, each step adds to the path integral
  omega_i -= g_i * delta_theta_i, where g is the gradient of the TASK loss only (Zenke et al.; Hsu et al.'s
  "unreg_gradients") and delta_theta the step's actual update. One backward pass: g is the total
  gradient minus the penalty's analytic gradient 2 c Omega (theta - theta*) at the pre-step weights.
- After each task (`after_task`): Omega += omega / ((theta - theta_start)^2 + xi), with theta_start the
  weights when the task began (= the previous anchor; the initial weights for the first task); then
  omega <- 0 and the anchor theta* becomes the current weights. No clipping of omega (as in Zenke
  et al.'s and Hsu et al.'s code).
- Class-incremental prediction: argmax of the softmax over all classes of the one head (HeadLearner).
- Memory: the weights, Omega and theta* (3x the parameters, charged in param_bytes); omega exists
  only while a task is trained (it is zero between tasks and not kept); no stored items.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch.nn import functional as F

from dualmem.core.params import param
from dualmem.data.stream import Task
from dualmem.learners.common.base import LearnerContext, parameter_cost
from dualmem.learners.common.head import HeadConfig, HeadLearner


@dataclass(frozen=True)
class SIConfig(HeadConfig):
    # Hsu et al. 2018, scripts/split_MNIST_incremental_class.sh: SI --reg_coef 600 on c * sum Omega (theta - theta*)^2
    c: float = param(600.0, minimum=0.0)
    # damping xi: Hsu et al.'s SI default damping_factor 0.1 (also van de Ven & Tolias 2019's epsilon 0.1)
    xi: float = param(0.1, minimum=1e-12)


class SILearner(HeadLearner):
    name = "si"
    Config = SIConfig

    def __init__(self, cfg: SIConfig, ctx: LearnerContext) -> None:
        super().__init__(cfg, ctx)
        self.omega_big = [torch.zeros_like(p) for p in self.parameters()]  # Omega, the consolidated importance
        self.anchor = [p.detach().clone() for p in self.parameters()]  # theta*: initial weights, then task ends
        self.omega: list[torch.Tensor] | None = None  # the running path integral, only during a task

    def penalty(self) -> torch.Tensor:
        """c * sum Omega (theta - theta*)^2, with gradients."""
        total = sum(((p - a).square() * w).sum() for p, w, a in zip(self.parameters(), self.omega_big, self.anchor,
                                                                      strict=True))
        return self.cfg.c * total  # type: ignore[return-value]

    def before_task(self, task: Task) -> None:
        super().before_task(task)
        self.omega = [torch.zeros_like(p) for p in self.parameters()]

    def observe(self, x: torch.Tensor, y: torch.Tensor, ids: np.ndarray) -> None:
        assert self.omega is not None, "observe() outside a task"
        params = self.parameters()
        before = [p.detach().clone() for p in params]
        loss = F.cross_entropy(self.logits(x), y)
        regularised = self.tasks_seen > 0
        if regularised:
            loss = loss + self.penalty()
        self.step(loss, len(y))  # leaves the total gradient in .grad
        with torch.no_grad():
            for p, old, w, big, a in zip(params, before, self.omega, self.omega_big, self.anchor, strict=True):
                if p.grad is None:
                    continue
                grad = p.grad - 2.0 * self.cfg.c * big * (old - a) if regularised else p.grad
                w.sub_(grad * (p - old))

    def after_task(self, task: Task) -> None:
        super().after_task(task)
        assert self.omega is not None
        with torch.no_grad():
            for p, w, big, a in zip(self.parameters(), self.omega, self.omega_big, self.anchor, strict=True):
                big.add_(w / ((p - a).square() + self.cfg.xi))
            self.anchor = [p.detach().clone() for p in self.parameters()]
        self.omega = None

    # -- state --------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "omega_big": [w.clone() for w in self.omega_big],
                "anchor": [a.clone() for a in self.anchor]}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self.omega_big = [w.clone() for w in state["omega_big"]]
        self.anchor = [a.clone() for a in state["anchor"]]
        self.omega = None

    def memory_cost(self) -> dict[str, int]:
        cost = parameter_cost(self.encoder, self.head)
        extra = sum(t.numel() for t in (*self.omega_big, *self.anchor))
        return {**cost, "params": cost["params"] + extra, "param_bytes": cost["param_bytes"] + 4 * extra}
