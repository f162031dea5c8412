"""Replay learners (er, agem, derpp): what is specific to each — A-GEM's projection, DER++'s stored logits,
ER's replayed samples, the buffer within the one memory budget, and the replay sampler's saved state."""

from __future__ import annotations

import copy
import io

import pytest
import torch

from dualmem.core.params import Section
from dualmem.encoders import new_encoder
from dualmem.learners import LearnerContext, learner_class
from dualmem.learners.agem import project
from dualmem.learners.common.base import Learner

from .conftest import digits_stream

HEAD = {"epochs": 1, "lr": 0.001, "batch_size": 16}
CONFIGS = {
    "er": {**HEAD, "replay_batch_size": 16},
    "agem": {**HEAD, "replay_batch_size": 16},
    "derpp": {**HEAD, "replay_batch_size": 16, "alpha": 0.2, "beta": 0.5},
}
NAMES = sorted(CONFIGS)


def make(name: str, stream, budget: int | None = None, seed: int = 0) -> Learner:
    cls = learner_class(name)
    ctx = LearnerContext(new_encoder(stream.x_train.shape[1], [32, 32], "test", seed), stream.n_classes, seed,
                         stream.x_train, budget)
    return cls(cls.parse(Section(CONFIGS[name], f"learners.{name}")), ctx)


def flat_grad(learner: Learner, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    loss = torch.nn.functional.cross_entropy(learner.logits(x), y)
    return torch.cat([g.flatten() for g in torch.autograd.grad(loss, learner.parameters())])


def test_project_removes_only_a_conflicting_component() -> None:
    g_ref = torch.tensor([1.0, 0.0, 2.0])
    conflicting = torch.tensor([-3.0, 1.0, 0.5])  # g·g_ref = -2
    out = project(conflicting, g_ref)
    assert torch.dot(out, g_ref).abs() < 1e-6
    assert torch.allclose(out, conflicting + 0.4 * g_ref)
    aligned = torch.tensor([1.0, 5.0, -0.1])  # g·g_ref = 0.8 >= 0: untouched
    assert torch.equal(project(aligned, g_ref), aligned)
    assert torch.equal(project(conflicting, torch.zeros(3)), conflicting)  # empty reference: untouched


def test_agem_applied_gradient_never_conflicts_with_memory(digits, one_thread) -> None:
    stream = digits_stream(digits)
    learner = make("agem", stream)
    learner.learn_task(stream.task(0))
    task = stream.task(1)
    learner.before_task(task)
    projected = 0
    for x, y, ids in task.batches(learner.batch_size):
        before = copy.deepcopy(learner)
        rows = before.buffer.sample(before.cfg.replay_batch_size, before.replay_rng)  # the rows observe() draws
        g = flat_grad(before, x, y)
        g_ref = flat_grad(before, before.buffer.x(rows), before.buffer.labels[rows])
        learner.guarded_observe(x, y, ids)
        applied = torch.cat([p.grad.flatten() for p in learner.parameters()])
        assert torch.dot(applied, g_ref) >= -1e-5 * g_ref.norm() * applied.norm()
        if torch.dot(g, g_ref) < 0:
            projected += 1
            assert torch.allclose(applied, project(g, g_ref), atol=1e-6)
        else:
            assert torch.allclose(applied, g, atol=1e-6)
    assert projected > 0, "no conflicting step: the projection was never exercised"


def test_derpp_stores_the_logits_seen_at_insertion(digits, one_thread) -> None:
    stream = digits_stream(digits)
    learner = make("derpp", stream)
    task = stream.task(0)
    learner.before_task(task)
    x, y, ids = next(task.batches(learner.batch_size))
    with torch.no_grad():
        expected = learner.logits(x)
    learner.guarded_observe(x, y, ids)
    assert torch.equal(learner.buffer.ids, torch.from_numpy(ids).long())
    assert torch.allclose(learner.buffer.extras["logits"], expected, atol=1e-6)
    # the next step matches these stored logits, not the current network's
    with torch.no_grad():
        assert not torch.allclose(learner.logits(x), expected, atol=1e-4)


def test_er_trains_on_stream_and_replay_samples(digits, one_thread) -> None:
    stream = digits_stream(digits)
    learner = make("er", stream)
    task = stream.task(0)
    learner.before_task(task)
    batches = task.batches(learner.batch_size)
    learner.guarded_observe(*next(batches))
    assert learner.samples_trained == 16 and len(learner.buffer) == 16  # empty buffer: stream batch only
    learner.guarded_observe(*next(batches))
    assert learner.samples_trained == 16 + 16 + 16 and len(learner.buffer) == 32


@pytest.mark.parametrize("name", NAMES)
def test_buffer_within_budget(name, digits, one_thread) -> None:
    stream = digits_stream(digits)
    budget = 50 * 72 + 30  # 50 raw digits (64 B image + 8 B label), plus change
    learner = make(name, stream, budget)
    for index in range(2):
        learner.learn_task(stream.task(index))
    item_bytes = 72 + (4 * stream.n_classes if name == "derpp" else 0)  # DER++ also pays its float32 logits
    cost = learner.memory_cost()
    assert cost["items"] == len(learner.buffer) == budget // item_bytes
    assert cost["item_bytes"] == cost["items"] * item_bytes <= budget
    assert set(learner.buffer.labels.tolist()) <= set(stream.classes_up_to(1))


@pytest.mark.parametrize("name", NAMES)
def test_saved_replay_state_continues_identically(name, digits, one_thread) -> None:
    stream = digits_stream(digits)
    a = make(name, stream, budget=80 * 72)
    a.learn_task(stream.task(0))
    blob = io.BytesIO()
    torch.save(a.state_dict(), blob)
    blob.seek(0)
    b = make(name, stream, budget=80 * 72)
    b.load_state_dict(torch.load(blob, weights_only=False))
    for learner in (a, b):
        learner.learn_task(stream.task(1))
    for pa, pb in zip(a.parameters(), b.parameters(), strict=True):
        assert torch.equal(pa, pb)
    assert torch.equal(a.buffer.ids, b.buffer.ids)
    assert torch.equal(a.replay_rng.get_state(), b.replay_rng.get_state())
