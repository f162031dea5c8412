"""`dualmem` for text: an episodic datastore read as a kNN language model, consolidated in sleep.

- Wake (`observe`): no gradient step; `per_step` windows of each batch are written once to the store
  (raw text, domain-balanced FIFO within lm.memory_bytes; the general domain's windows fill it at the
  start). Its keys are the model's hidden states at every position of the stored windows, values the
  byte that follows (Khandelwal et al. 2020); keys are re-made from the text whenever the model changes,
  so only the text is charged.
- Readout: p = (1 - lam) p_model + lam p_kNN, p_kNN = softmax over the k nearest keys of
  -(squared L2 distance) / temperature, summed per next byte.
- Sleep (`sleep`, after each domain): the model is trained for `sleep_steps` steps on domain-balanced
  batches replayed from the store, distilled (T = `distill_temperature`) toward the model before the
  sleep; then the keys are re-made.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

import torch
from torch.nn import functional as F

from dualmem.core.optim import adam
from dualmem.core.params import param
from dualmem.core.seeding import seeded_generator
from dualmem.lm.text_learner import Domain, TextBuffer, TextContext, TextLearner


@dataclass(frozen=True)
class DualTextConfig:
    k: int = param(16, minimum=1)
    temperature: float = param(10.0, minimum=1e-6)  # of -squared L2 distance in the kNN softmax
    lam: float = param(0.25, minimum=0.0, maximum=1.0)  # weight of the kNN distribution
    per_step: int = param(4, minimum=0)  # windows of each wake batch written to the store
    sleep_steps: int = param(100, minimum=0)
    distill_weight: float = param(1.0, minimum=0.0)
    distill_temperature: float = param(2.0, minimum=1e-6)
    query_chunk: int = param(1024, minimum=1)  # positions searched at once (memory only)


class TextDualMemory(TextLearner):
    name = "dualmem"
    Config = DualTextConfig
    has_sleep = True

    def __init__(self, cfg: DualTextConfig, ctx: TextContext) -> None:
        super().__init__(cfg, ctx)
        self.store = TextBuffer(ctx.memory_bytes, self.context + 1)
        self.generator = seeded_generator("lm-dualmem", ctx.seed)
        self.cache: tuple[torch.Tensor, torch.Tensor] | None = None  # (keys, next bytes), made from the store

    def start(self, general: Domain) -> None:
        super().start(general)
        self.write(general.windows(self.store.capacity, self.context, self.generator), general.index)

    def before_domain(self, domain: Domain) -> None:
        self.seen.append(domain.index)  # wake trains nothing: no optimiser

    def observe(self, batch: torch.Tensor, domain: int) -> None:
        self.write(batch[: self.cfg.per_step], domain)

    def write(self, windows: torch.Tensor, domain: int) -> None:
        self.store.add(windows, domain)
        self.cache = None

    # -- sleep --------------------------------------------------------------------------------
    def sleep(self, domain: Domain) -> None:
        teacher = copy.deepcopy(self.model).eval()
        optimiser = adam(list(self.model.parameters()), self.ctx.training.lr)
        generator = seeded_generator("lm-dualmem-sleep", self.ctx.seed, domain.index)
        t = self.cfg.distill_temperature
        self.model.train()
        for _ in range(self.cfg.sleep_steps):
            batch = self.store.sample(self.ctx.training.batch_size, generator)
            logits = self.model(batch[:, :-1])
            loss = F.cross_entropy(logits.flatten(0, 1), batch[:, 1:].long().flatten())
            if self.cfg.distill_weight > 0:
                with torch.no_grad():
                    target = torch.softmax(teacher(batch[:, :-1]) / t, dim=2)
                student = torch.log_softmax(logits / t, dim=2)
                kl = F.kl_div(student.flatten(0, 1), target.flatten(0, 1), reduction="batchmean")
                loss = loss + self.cfg.distill_weight * t * t * kl
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
        self.model.eval()
        self.cache = None

    def wake_state_after_sleep(self, wake: dict[str, Any], slept: dict[str, Any] | None) -> dict[str, Any]:
        return wake if slept is None else {**wake, "model": slept["model"]}

    # -- readout ------------------------------------------------------------------------------
    @torch.no_grad()
    def datastore(self) -> tuple[torch.Tensor, torch.Tensor]:
        if self.cache is None:
            windows = self.store.windows
            keys = torch.cat([self.model.hidden(windows[i : i + 256, :-1]).flatten(0, 1)
                              for i in range(0, len(windows), 256)])
            self.cache = (keys, windows[:, 1:].long().flatten())
        return self.cache

    @torch.no_grad()
    def window_losses(self, windows: torch.Tensor, scored_from: int = 0) -> torch.Tensor:
        """The interpolated loss from position `scored_from` on; before it the model's alone (not scored:
        the store is not searched for it). Each query is searched on its own, so the scored losses are the
        same bytes whatever `scored_from` is (tests/test_lm.py checks it)."""
        hidden = self.model.hidden(windows[:, :-1])
        n, targets = len(windows), windows[:, 1:].long()
        probs = torch.softmax(self.model.logits(hidden), dim=2)
        p = probs.flatten(0, 1).gather(1, targets.flatten().unsqueeze(1)).view(n, -1)  # the model's
        keys, values = self.datastore()
        queries = hidden[:, scored_from:].flatten(0, 1).split(self.cfg.query_chunk)
        scored = targets[:, scored_from:].flatten().unsqueeze(1)
        p_knn = torch.cat([self.knn_probs(q, keys, values) for q in queries]).gather(1, scored).view(n, -1)
        p[:, scored_from:] = (1 - self.cfg.lam) * p[:, scored_from:] + self.cfg.lam * p_knn
        return -p.clamp_min(1e-30).log()

    def knn_probs(self, queries: torch.Tensor, keys: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
        """(q, 256) distribution of the next byte from the k nearest stored positions. A query's own squared
        norm is left out of its distances: the same for all its keys, it changes neither the ranking nor
        the softmax over them."""
        shifted = torch.addmm(keys.pow(2).sum(1), queries, keys.T, alpha=-2.0)  # |k|^2 - 2 q.k = distance - |q|^2
        nearest, rows = shifted.topk(min(self.cfg.k, len(keys)), dim=1, largest=False)
        weights = torch.softmax(-nearest / self.cfg.temperature, dim=1)
        return torch.zeros(len(queries), 256).scatter_add_(1, values[rows], weights)

    # -- state --------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "store": self.store.state_dict(), "rng": self.generator.get_state()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self.store.load_state_dict(state["store"])
        self.generator.set_state(state["rng"])
        self.cache = None

    def memory_cost(self) -> dict[str, int]:
        return {**super().memory_cost(), "items": len(self.store), "item_bytes": self.store.nbytes()}
