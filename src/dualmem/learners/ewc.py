"""`ewc`: online Elastic Weight Consolidation (Kirkpatrick et al. 2017, PNAS; the online variant of
Schwarz et al. 2018, "Progress & Compress", ICML, as run by Hsu et al. 2018, "Re-evaluating Continual
Learning Scenarios", and van de Ven & Tolias 2019, "Three scenarios for continual learning").

- Training (`observe`): cross-entropy over the single 10-way head (as `finetune`) plus the quadratic
  penalty (lambda / 2) * sum_i F_i (theta_i - theta*_i)^2 toward the anchor theta*.
- After each task (`after_task`): the diagonal Fisher of the task's training data (at most
  `fisher_samples` items, a deterministic subsample per task) is estimated at the end-of-task weights
  and accumulated, F <- gamma * F + F_new; the anchor becomes the current weights.
  The Fisher is the mean over items of the squared per-item gradient of the log-likelihood
  (Hsu et al.'s `EWC_online_mnist`: batch size 1), computed EXACTLY but vectorised: for a linear layer
  z = a W^T + b the per-item gradient of W is delta_i a_i^T, so sum_i (delta_i a_i^T)^2 = (delta^2)^T (a^2)
  — one backward pass per batch of `fisher_batch` items, no per-item loop and no batch approximation.
  The label of each item is the model's own prediction among the classes seen so far (`labels:
  predicted`, the "true Fisher" with the argmax label, as in Hsu et al. and van de Ven's original code)
  or its true label (`labels: true`, the empirical Fisher).
- Class-incremental prediction: argmax of the softmax over all classes of the one head (HeadLearner).
- Memory: the weights, F and theta* (3x the parameters, charged in param_bytes); no stored items.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from dualmem.core.params import param
from dualmem.data.stream import Task
from dualmem.learners.common.base import LearnerContext, parameter_cost
from dualmem.learners.common.head import HeadConfig, HeadLearner


@dataclass(frozen=True)
class EWCConfig(HeadConfig):
    # Hsu et al. 2018, scripts/split_MNIST_incremental_class.sh, EWC_online_mnist: reg_coef 100 on
    # reg_coef * sum F (theta - theta*)^2, i.e. lambda = 200 in the (lambda / 2) convention used here
    lam: float = param(200.0, minimum=0.0)
    gamma: float = param(1.0, minimum=0.0, maximum=1.0)  # Hsu et al.'s online EWC sums the Fishers: gamma = 1
    fisher_samples: int = param(60000, minimum=1)  # Hsu et al.: n_fisher_sample 60000 (= every item of a task)
    fisher_batch: int = param(512, minimum=1)  # items per vectorised Fisher pass (speed only, not the result)
    labels: str = param("predicted", choices=("predicted", "true"))


def linear_layers(modules: list[nn.Module], params: list[nn.Parameter]) -> list[nn.Linear]:
    """Every nn.Linear of `modules`; raise unless they hold all of `params` (the exact Fisher needs it)."""
    layers = [m for module in modules for m in module.modules() if isinstance(m, nn.Linear)]
    covered = {id(p) for layer in layers for p in layer.parameters()}
    if any(id(p) not in covered for p in params):
        raise TypeError("ewc's exact per-item Fisher supports networks whose parameters are all nn.Linear")
    return layers


def per_item_sq_grads(forward: Any, layers: list[nn.Linear], x: torch.Tensor, labels: torch.Tensor | None,
                      allowed: torch.Tensor) -> dict[int, torch.Tensor]:
    """Sum over the items of x of the squared per-item gradient of -log p(label | x), per parameter
    (keyed by id). labels None: the model's argmax among `allowed` classes."""
    inputs: dict[nn.Linear, torch.Tensor] = {}
    outputs: dict[nn.Linear, torch.Tensor] = {}

    def hook(module: nn.Module, args: tuple[torch.Tensor, ...], out: torch.Tensor) -> None:
        inputs[module] = args[0].detach()  # type: ignore[index]
        outputs[module] = out  # type: ignore[index]

    handles = [layer.register_forward_hook(hook) for layer in layers]
    try:
        logits = forward(x)
    finally:
        for handle in handles:
            handle.remove()
    if labels is None:
        labels = allowed[logits.detach()[:, allowed].argmax(1)]
    # the summed loss: d(sum)/dz_i = d loss_i / dz_i, each item's own output gradient
    loss = F.cross_entropy(logits, labels, reduction="sum")
    deltas = torch.autograd.grad(loss, [outputs[layer] for layer in layers])
    out: dict[int, torch.Tensor] = {}
    for layer, delta in zip(layers, deltas, strict=True):
        out[id(layer.weight)] = delta.square().T @ inputs[layer].square()
        if layer.bias is not None:
            out[id(layer.bias)] = delta.square().sum(0)
    return out


class EWCLearner(HeadLearner):
    name = "ewc"
    Config = EWCConfig

    def __init__(self, cfg: EWCConfig, ctx: LearnerContext) -> None:
        super().__init__(cfg, ctx)
        self.fisher = [torch.zeros_like(p) for p in self.parameters()]
        self.anchor = [p.detach().clone() for p in self.parameters()]

    def penalty(self) -> torch.Tensor:
        """(lambda / 2) * sum F (theta - theta*)^2, with gradients."""
        total = sum(((p - a).square() * f).sum() for p, f, a in zip(self.parameters(), self.fisher, self.anchor,
                                                                      strict=True))
        return 0.5 * self.cfg.lam * total  # type: ignore[return-value]

    def observe(self, x: torch.Tensor, y: torch.Tensor, ids: np.ndarray) -> None:
        loss = F.cross_entropy(self.logits(x), y)
        if self.tasks_seen > 0:
            loss = loss + self.penalty()
        self.step(loss, len(y))

    def after_task(self, task: Task) -> None:
        super().after_task(task)  # eval mode (as Hsu et al. compute the Fisher)
        new = self.estimate_fisher(task)
        with torch.no_grad():
            for f, f_new in zip(self.fisher, new, strict=True):
                f.mul_(self.cfg.gamma).add_(f_new)
            self.anchor = [p.detach().clone() for p in self.parameters()]

    def estimate_fisher(self, task: Task) -> list[torch.Tensor]:
        """Diagonal Fisher of the task: mean squared per-item gradient over at most `fisher_samples` items."""
        params = self.parameters()
        layers = linear_layers([self.encoder, self.head], params)
        rows = np.arange(len(task))
        if len(rows) > self.cfg.fisher_samples:
            rng = np.random.default_rng([self.ctx.seed, task.index, 1705])
            rows = np.sort(rng.choice(len(rows), self.cfg.fisher_samples, replace=False))
        allowed = torch.tensor(sorted(self.visible_classes))
        total = {id(p): torch.zeros_like(p) for p in params}
        for start in range(0, len(rows), self.cfg.fisher_batch):
            chunk = torch.from_numpy(rows[start : start + self.cfg.fisher_batch])
            labels = task.y[chunk] if self.cfg.labels == "true" else None
            for key, value in per_item_sq_grads(self.logits, layers, task.x[chunk], labels, allowed).items():
                total[key] += value
        return [total[id(p)] / len(rows) for p in params]

    # -- state --------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "fisher": [f.clone() for f in self.fisher],
                "anchor": [a.clone() for a in self.anchor]}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self.fisher = [f.clone() for f in state["fisher"]]
        self.anchor = [a.clone() for a in state["anchor"]]

    def memory_cost(self) -> dict[str, int]:
        cost = parameter_cost(self.encoder, self.head)
        extra = sum(t.numel() for t in (*self.fisher, *self.anchor))
        return {**cost, "params": cost["params"] + extra, "param_bytes": cost["param_bytes"] + 4 * extra}
