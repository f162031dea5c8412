"""The regularisation learners (ewc, si, lwf): the mechanisms that can silently fail."""

from __future__ import annotations

import copy
import io

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from dualmem.core.params import Section
from dualmem.encoders import Encoder, EncoderParams, train_stream_encoder
from dualmem.learners import LearnerContext, learner_class
from dualmem.learners.ewc import linear_layers, per_item_sq_grads
from dualmem.learners.lwf import distillation

from .conftest import digits_stream

ENC = EncoderParams([16, 16], "first_task", 1, 1e-3, 64)
HEAD = {"epochs": 1, "lr": 0.001, "batch_size": 64}
CONFIGS = {
    "ewc": {**HEAD, "lam": 200.0, "gamma": 0.5, "fisher_samples": 100, "fisher_batch": 32, "labels": "predicted"},
    "si": {**HEAD, "c": 600.0, "xi": 0.1},
    "lwf": {**HEAD, "lam": 1.0, "temperature": 2.0},
}


@pytest.fixture(scope="module")
def stream(digits):
    return digits_stream(digits)


@pytest.fixture(scope="module")
def encoder(stream):
    return train_stream_encoder(stream, ENC, progress=False)[0]


def make(name, stream, encoder, **overrides):
    cls = learner_class(name)
    cfg = cls.parse(Section({**CONFIGS[name], **overrides}, f"learners.{name}"))
    return cls(cfg, LearnerContext(encoder, stream.n_classes, stream.seed, stream.x_train))


def n_params(learner) -> int:
    return sum(p.numel() for p in learner.parameters())


@pytest.mark.parametrize("true_labels", [False, True])
def test_ewc_vectorised_fisher_equals_per_item_gradients(one_thread, true_labels):
    torch.manual_seed(0)
    model = nn.Sequential(Encoder(6, [5, 4]), nn.Linear(4, 7))
    params = list(model.parameters())
    x, y = torch.randn(9, 6), torch.randint(0, 3, (9,))
    allowed = torch.tensor([0, 2, 5])
    got = per_item_sq_grads(model, linear_layers([model], params), x, y if true_labels else None, allowed)
    expected = [torch.zeros_like(p) for p in params]
    for i in range(len(x)):
        logits = model(x[i : i + 1])
        label = y[i : i + 1] if true_labels else allowed[logits[:, allowed].argmax(1)]
        for e, g in zip(expected, torch.autograd.grad(F.cross_entropy(logits, label), params), strict=True):
            e += g.square()
    for p, e in zip(params, expected, strict=True):
        torch.testing.assert_close(got[id(p)], e, rtol=1e-4, atol=1e-7)


def test_ewc_penalty_zero_at_anchor_and_online_fisher_sum(one_thread, stream, encoder):
    learner = make("ewc", stream, encoder)
    learner.learn_task(stream.task(0))
    first = [f.clone() for f in learner.fisher]
    assert float(learner.penalty().detach()) == 0.0  # at the anchor
    assert all((f >= 0).all() for f in first) and sum(float(f.sum()) for f in first) > 0
    with torch.no_grad():
        shift = [torch.randn_like(p) * 0.01 for p in learner.parameters()]
        for p, s in zip(learner.parameters(), shift, strict=True):
            p.add_(s)
    expected = 0.5 * 200.0 * sum(float((f * s.square()).sum()) for f, s in zip(first, shift, strict=True))
    assert float(learner.penalty().detach()) == pytest.approx(expected, rel=1e-4)
    learner.learn_task(stream.task(1))  # F <- gamma F + F_new, F_new at the end-of-task weights
    new = learner.estimate_fisher(stream.task(1))
    for f, f1, f2 in zip(learner.fisher, first, new, strict=True):
        torch.testing.assert_close(f, 0.5 * f1 + f2)
    assert all(torch.equal(a, p) for a, p in zip(learner.anchor, learner.parameters(), strict=True))


def test_si_path_integral_uses_the_task_loss_gradient(one_thread, stream, encoder):
    learner = make("si", stream, encoder)
    learner.learn_task(stream.task(0))
    assert sum(float(w.abs().sum()) for w in learner.omega_big) > 0
    task = stream.task(1)
    learner.before_task(task)
    batches = task.batches(64)
    learner.guarded_observe(*next(batches))  # away from the anchor: the penalty's gradient is non-zero
    x, y, ids = next(batches)
    before = copy.deepcopy(learner)
    learner.guarded_observe(x, y, ids)  # the total loss includes the penalty ...
    params = before.parameters()
    grads = torch.autograd.grad(F.cross_entropy(before.logits(x), y), params)  # ... omega must not
    for w, w_old, g, p_old, p_new in zip(learner.omega, before.omega, grads, params, learner.parameters(),
                                         strict=True):
        torch.testing.assert_close(w - w_old, -g * (p_new.detach() - p_old.detach()), rtol=1e-3, atol=1e-9)
    # at the task's end: Omega += omega / (delta_task^2 + xi), the anchor moves, omega is dropped
    omega = [w.clone() for w in learner.omega]
    big, start = [b.clone() for b in learner.omega_big], [a.clone() for a in learner.anchor]
    learner.after_task(task)
    for b_new, b_old, w, a, p in zip(learner.omega_big, big, omega, start, learner.parameters(), strict=True):
        torch.testing.assert_close(b_new, b_old + w / ((p.detach() - a).square() + 0.1))
    assert learner.omega is None and float(learner.penalty().detach()) == 0.0


def test_lwf_distils_old_classes_only_while_training(one_thread, stream, encoder):
    learner = make("lwf", stream, encoder)
    learner.learn_task(stream.task(0))
    assert learner.old_model is None
    learner.before_task(stream.task(1))
    assert learner.old_classes.tolist() == sorted(stream.task_classes(0))
    x = stream.task(1).x[:32]
    with torch.no_grad():
        old = learner.old_model(x)[:, learner.old_classes]
        new = learner.logits(x)[:, learner.old_classes]
    assert float(distillation(new, old, 2.0)) == pytest.approx(0.0, abs=1e-6)  # the copy is the model
    assert float(distillation(new + torch.randn_like(new), old, 2.0)) > 0
    learner.after_task(stream.task(1))
    assert learner.old_model is None  # nothing kept between tasks: memory = the weights
    assert learner.memory_cost()["params"] == n_params(learner)


@pytest.mark.parametrize("name", ["ewc", "si"])
def test_penalty_state_is_charged(name, stream, encoder):
    learner = make(name, stream, encoder)
    cost = learner.memory_cost()
    assert cost["params"] == 3 * n_params(learner) and cost["param_bytes"] == 4 * cost["params"]
    assert cost["items"] == cost["item_bytes"] == 0


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_saving_after_a_task_then_continuing_equals_not_saving(one_thread, name, stream, encoder):
    a, b = make(name, stream, encoder), make(name, stream, encoder)
    for learner in (a, b):
        learner.learn_task(stream.task(0))
        learner.learn_task(stream.task(1))
    c = make(name, stream, encoder)
    c.load_state_dict(torch.load(_saved(b.state_dict()), weights_only=False))
    for learner in (a, c):
        learner.learn_task(stream.task(2))
    x, _ = stream.test_split(stream.classes_up_to(2))
    assert torch.equal(a.predict_proba(x), c.predict_proba(x))


def _saved(state):
    buffer = io.BytesIO()
    torch.save(state, buffer)
    buffer.seek(0)
    return buffer
