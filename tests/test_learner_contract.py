"""Every learner (every file in src/dualmem/learners/) keeps the shared contract, tested through the
capabilities only — never by asking which class it is:
- deterministic: the same seed gives the same state;
- its state round-trips: a reloaded learner predicts the same and keeps learning the same;
- it keeps the one memory budget (with a positive control: a learner that hoards is caught);
- every capability the tests call answers in the right shape.
The learners' settings come from the tiny profile (profiles/tiny.yaml, digits)."""

from __future__ import annotations

import copy
import io
from typing import Any

import numpy as np
import pytest
import torch

from dualmem.core.params import Section
from dualmem.encoders import EncoderParams, train_stream_encoder
from dualmem.evals.recall_protocol import RecallParams, make_recall_stream
from dualmem.learners import Learner, LearnerContext, available, learner_class
from dualmem.learners.common.readouts import Episodes, HeadFit
from dualmem.learners.finetune import FinetuneLearner

from .conftest import digits_stream

ENC = EncoderParams([32, 32], "first_task", 2, 1e-3, 64)
BUDGET = 14400  # the tiny profile's: 200 raw digits
UPPER_BOUNDS = {"joint"}  # the oracle keeps all data by definition


def build(name: str, stream: Any, params: dict, encoder: Any, budget: int | None = BUDGET) -> Learner:
    cls = learner_class(name)
    ctx = LearnerContext(copy.deepcopy(encoder), stream.n_classes, stream.seed, stream.x_train, budget)
    return cls(cls.parse(Section.of(params, f"learners.{name}")), ctx)


def learn(learner: Learner, stream: Any, tasks: range) -> Learner:
    for index in tasks:
        learner.learn_task(stream.task(index))
        learner.sleep(stream.task(index))
    return learner


def tensors(state: Any) -> list[torch.Tensor]:
    if isinstance(state, dict):
        return [t for value in state.values() for t in tensors(value)]
    if isinstance(state, list | tuple):
        return [t for value in state for t in tensors(value)]
    return [state] if isinstance(state, torch.Tensor) else []


def assert_within_budget(learner: Learner, budget: int) -> None:
    cost = learner.memory_cost()
    assert set(cost) >= {"params", "param_bytes", "items", "item_bytes"}
    assert cost["item_bytes"] <= budget, f"{learner.name} stores {cost['item_bytes']} B > budget {budget} B"
    assert (cost["items"] > 0) == (cost["item_bytes"] > 0), f"{learner.name}: stored items must be charged"


@pytest.fixture(scope="module")
def setting(digits):
    stream = digits_stream(digits)
    encoder, _ = train_stream_encoder(stream, ENC, progress=False)
    return stream, encoder


def test_every_learner_file_defines_its_learner():
    names = available()
    assert {"finetune", "joint", "dualmem"} <= set(names)
    for name in names:
        assert learner_class(name).name == name


@pytest.mark.parametrize("name", available())
def test_deterministic_and_state_round_trips(name, setting, tiny_params, one_thread):
    stream, encoder = setting
    a = learn(build(name, stream, tiny_params, encoder), stream, range(2))
    b = learn(build(name, stream, tiny_params, encoder), stream, range(2))
    for ta, tb in zip(tensors(a.state_dict()), tensors(b.state_dict()), strict=True):
        assert torch.equal(ta, tb), f"{name}: same seed, different state"
    buffer = io.BytesIO()
    torch.save(a.state_dict(), buffer)
    buffer.seek(0)
    c = build(name, stream, tiny_params, encoder)
    c.load_state_dict(torch.load(buffer, weights_only=False))
    x, _ = stream.test_split(list(range(10)))
    assert torch.equal(a.predict(x), c.predict(x)), f"{name}: reloaded learner predicts differently"
    learn(a, stream, range(2, 3))
    learn(c, stream, range(2, 3))
    assert torch.equal(a.predict(x), c.predict(x)), f"{name}: reloaded learner learns differently"


@pytest.mark.parametrize("name", available())
def test_keeps_the_memory_budget(name, setting, tiny_params, one_thread):
    stream, encoder = setting
    learner = learn(build(name, stream, tiny_params, encoder), stream, range(stream.n_tasks))
    if name not in UPPER_BOUNDS:
        assert_within_budget(learner, BUDGET)
    assert learner.known_classes() >= set(stream.classes_up_to(stream.n_tasks - 1))


class Hoarder(FinetuneLearner):
    """Positive control: keeps every item it sees, whatever the budget."""

    name = "hoarder"

    def __init__(self, cfg: Any, ctx: LearnerContext) -> None:
        super().__init__(cfg, ctx)
        self.kept = np.empty(0, dtype=np.int64)

    def observe(self, x: torch.Tensor, y: torch.Tensor, ids: np.ndarray) -> None:
        super().observe(x, y, ids)
        self.kept = np.union1d(self.kept, ids)

    def memory_cost(self) -> dict[str, int]:
        return {**super().memory_cost(), "items": len(self.kept),
                "item_bytes": len(self.kept) * self.ctx.raw_item_bytes}


def test_budget_check_catches_a_hoarder(setting, tiny_params, one_thread):
    stream, encoder = setting
    ctx = LearnerContext(copy.deepcopy(encoder), stream.n_classes, stream.seed, stream.x_train, BUDGET)
    hoarder = learn(Hoarder(Hoarder.parse(Section.of(tiny_params, "learners.finetune")), ctx), stream, range(2))
    with pytest.raises(AssertionError, match="budget"):
        assert_within_budget(hoarder, BUDGET)


@pytest.mark.parametrize("name", available())
def test_capabilities_answer_in_shape(name, setting, tiny_params, one_thread):
    stream, encoder = setting
    learner = learn(build(name, stream, tiny_params, encoder), stream, range(2))
    x, _ = stream.test_split(list(range(10)))
    x = x[:50]
    feats = learner.features(x)
    assert feats.ndim == 2 and len(feats) == 50
    proba = learner.proba_from_features(feats)
    assert proba.shape == (50, stream.n_classes)
    assert torch.allclose(proba.sum(1), torch.ones(50), atol=1e-4)
    assert torch.equal(proba.argmax(1), learner.predict(x))
    novelty = learner.novelty_from_features(feats)
    assert novelty.shape == (50,) and torch.isfinite(novelty).all()
    n_ep, d = 3, feats.shape[1]
    ways = torch.tensor([[7, 8, 9]] * n_ep)
    episodes = Episodes(support=feats[:6].expand(n_ep, 6, d).clone(),
                        support_y=torch.tensor([0, 1, 2, 0, 1, 2]).expand(n_ep, 6).clone(),
                        query=feats[6:16].expand(n_ep, 10, d).clone(), classes=ways)
    assert learner.fewshot_scores(episodes, HeadFit(5, 0.01)).shape == (n_ep, 10, 3)
    known = sorted(learner.known_classes())
    classes = torch.tensor([[*known, 7, 8, 9]] * n_ep)
    gen = Episodes(support=episodes.support, support_y=episodes.support_y + len(known), query=episodes.query,
                   classes=classes)
    assert learner.generalised_scores(gen, known, HeadFit(5, 0.01)).shape == (n_ep, 10, len(known) + 3)
    cfg = RecallParams(sizes=[20, 60], n_targets=4, noise_std=0.05, dropout=0.0, k=1, candidates=0, age_bins=2,
                       query_batch=32, online_batch_size=10, online_lr=1e-3, offline_epochs=1,
                       offline_batch_size=16, offline_min_steps=5, offline_lr=1e-3)
    before = [t.clone() for t in tensors(learner.state_dict())]
    outcome = learner.recall(make_recall_stream(stream.x_train, cfg, seed=0), cfg)
    assert set(outcome.recall) == {20, 60} and all(0.0 <= v <= 1.0 for v in outcome.recall.values())
    assert len(outcome.correct) == 60 and outcome.bytes_per_item > 0
    after = tensors(learner.state_dict())
    assert all(torch.equal(p, q) for p, q in zip(before, after, strict=True)), f"{name}: recall changed the learner"
