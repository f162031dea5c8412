"""Test 6's learners: the shared interface, the domain stream and the text store.

Stream: the base model was pretrained on the general domain (domain 0); then the learner meets the other
domains in order. `start(general)` hands it the general domain (already learned by the base, so a storing
learner may keep some of it); `learn_domain(domain)` runs `before_domain` -> `steps` x `observe(batch)` ->
`after_domain`; learners with a sleep phase implement `sleep(domain)`. Batches are windows of
`context + 1` bytes drawn deterministically from (seed, domain, step): every learner sees the same
windows in the same order. The leakage guard: a learner only ever gets a domain through the stream, and
`guarded_observe` refuses a batch tagged with a domain the stream has not reached.

Capability (what Test 6 calls): `window_losses(windows, scored_from)` — the loss in nats of every next
byte of (n, context + 1) windows; the evaluation scores the bytes from `scored_from` on (after a warm-up
prefix), and a learner may spare work on the others (the kNN-LM searches its store for scored bytes only).
"""

from __future__ import annotations

import copy
from abc import ABC, abstractmethod
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch

from dualmem.core.discovery import discovered_class, module_names
from dualmem.core.errors import LeakageError, ParamsError
from dualmem.core.optim import Adam, adam
from dualmem.core.params import Section, parse_config
from dualmem.core.seeding import seeded_generator
from dualmem.lm.model import ByteLM, window_losses

LEARNERS_DIR = Path(__file__).parent / "learners"


@dataclass(frozen=True)
class Domain:
    name: str
    index: int  # position in lm.domains (0 = the general domain)
    train: torch.Tensor  # uint8 bytes of its train slice
    seed: int

    def windows(self, n: int, context: int, generator: torch.Generator) -> torch.Tensor:
        starts = torch.randint(0, len(self.train) - context - 1, (n,), generator=generator)
        return self.train[starts.unsqueeze(1) + torch.arange(context + 1)]

    def batch(self, step: int, size: int, context: int) -> torch.Tensor:
        """The step's windows: the same for every learner."""
        return self.windows(size, context, seeded_generator("lm-batch", self.seed, self.index, step))


@dataclass(frozen=True)
class Training:
    """What every learner's fine-tuning shares (lm.finetune): the same steps, batch and optimiser."""

    steps: int
    batch_size: int
    lr: float

    @classmethod
    def from_params(cls, params: dict, section: str = "lm.finetune") -> Training:
        s = Section.of(params, section)
        return cls(s.integer("steps", minimum=1), s.integer("batch_size", minimum=1), s.number("lr", minimum=0.0))


@dataclass
class TextContext:
    base: ByteLM  # the pretrained base model of this seed
    training: Training
    memory_bytes: int  # raw text a storing learner may keep
    seed: int


class TextBuffer:
    """Stored windows of raw text (uint8, context + 1 bytes each) with their domain, within a byte budget;
    a full buffer evicts the oldest window of its largest domain (domain-balanced FIFO)."""

    def __init__(self, capacity_bytes: int, window: int) -> None:
        self.capacity = capacity_bytes // window
        if self.capacity < 1:
            raise ParamsError("lm.memory_bytes", f"is {capacity_bytes}, less than one window of {window} B",
                              f"use at least {window}")
        self.windows = torch.empty(0, window, dtype=torch.uint8)
        self.domains = torch.empty(0, dtype=torch.long)

    def __len__(self) -> int:
        return len(self.domains)

    def add(self, windows: torch.Tensor, domain: int) -> None:
        self.windows = torch.cat([self.windows, windows.to(torch.uint8)])
        self.domains = torch.cat([self.domains, torch.full((len(windows),), domain)])
        if len(self) > self.capacity:
            keep = np.ones(len(self), dtype=bool)
            domains = self.domains.numpy()
            counts = np.bincount(domains)
            for _ in range(len(self) - self.capacity):
                largest = int(np.argmax(counts))
                keep[np.flatnonzero(keep & (domains == largest))[0]] = False
                counts[largest] -= 1
            rows = torch.from_numpy(np.flatnonzero(keep))
            self.windows, self.domains = self.windows[rows], self.domains[rows]

    def sample(self, n: int, generator: torch.Generator) -> torch.Tensor:
        """n windows, each domain equally likely."""
        _, inverse, counts = torch.unique(self.domains, return_inverse=True, return_counts=True)
        rows = torch.multinomial((1.0 / counts.float())[inverse], n, replacement=True, generator=generator)
        return self.windows[rows]

    def nbytes(self) -> int:
        return int(self.windows.numel())

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {"windows": self.windows, "domains": self.domains}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        self.windows, self.domains = state["windows"], state["domains"]


class TextLearner(ABC):
    name: ClassVar[str]
    Config: ClassVar[type]
    has_sleep: ClassVar[bool] = False
    upper_bound: ClassVar[bool] = False

    def __init__(self, cfg: Any, ctx: TextContext) -> None:
        self.cfg, self.ctx = cfg, ctx
        self.model = copy.deepcopy(ctx.base)
        self.seen: list[int] = []  # domains revealed so far (the general one first)
        self.optimiser: Adam | None = None

    @property
    def context(self) -> int:
        return self.ctx.base.cfg.context

    # -- the stream ---------------------------------------------------------------------------
    def start(self, general: Domain) -> None:
        """The general domain, which the base model already learned: revealed from the start."""
        self.seen = [general.index]

    def learn_domain(self, domain: Domain) -> None:
        self.before_domain(domain)
        for step in range(self.ctx.training.steps):
            self.guarded_observe(domain.batch(step, self.ctx.training.batch_size, self.context), domain.index)
        self.after_domain(domain)

    def before_domain(self, domain: Domain) -> None:
        self.seen.append(domain.index)
        self.optimiser = adam(self.trainable(), self.ctx.training.lr)
        self.model.train()

    def after_domain(self, domain: Domain) -> None:
        self.model.eval()

    def guarded_observe(self, batch: torch.Tensor, domain: int) -> None:
        if domain not in self.seen:
            raise LeakageError(f"learner {self.name} was given domain {domain} before the stream reached it")
        self.observe(batch, domain)

    def trainable(self) -> list[torch.nn.Parameter]:
        return list(self.model.parameters())

    def step(self, loss: torch.Tensor) -> None:
        assert self.optimiser is not None, "observe() outside a domain"
        self.optimiser.zero_grad()
        loss.backward()
        self.optimiser.step()

    @abstractmethod
    def observe(self, batch: torch.Tensor, domain: int) -> None:
        """One learning step on (batch_size, context + 1) windows of the current domain."""

    def sleep(self, domain: Domain) -> None:
        """Offline consolidation after a domain; only learners with `has_sleep` do anything here."""
        return None

    def wake_state_after_sleep(self, wake: dict[str, Any], slept: dict[str, Any] | None) -> dict[str, Any]:
        """The state to sleep from: the wake state after this domain with what earlier sleeps consolidated."""
        return wake

    # -- capability ---------------------------------------------------------------------------
    @torch.no_grad()
    def window_losses(self, windows: torch.Tensor, scored_from: int = 0) -> torch.Tensor:
        """(n, context + 1) windows -> (n, context) nats of every next byte; those before position
        `scored_from` are not scored, and a learner may compute them more cheaply."""
        return window_losses(self.model, windows)

    # -- state --------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {"model": self.model.state_dict(), "seen": list(self.seen)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        self.seen = list(state["seen"])
        self.model.eval()

    def memory_cost(self) -> dict[str, int]:
        """What the learner keeps: {"params", "param_bytes", "items" (stored windows), "item_bytes"}."""
        n = sum(p.numel() for p in self.model.parameters())
        return {"params": n, "param_bytes": 4 * n, "items": 0, "item_bytes": 0}


def available() -> list[str]:
    return module_names(LEARNERS_DIR)


@cache
def text_learner_class(name: str) -> type[TextLearner]:
    return discovered_class("dualmem.lm.learners", LEARNERS_DIR, name, TextLearner, "lm.learners")


def parse_text_config(params: dict, name: str) -> Any:
    return parse_config(text_learner_class(name).Config, Section.of(params, f"lm.learner_params.{name}"))
