"""The leakage rule: no parameter or memory is fit on a class before the stream reveals it."""

import numpy as np
import pytest
import torch

from dualmem.core.errors import LeakageError
from dualmem.core.params import Section
from dualmem.encoders import EncoderParams, train_stream_encoder
from dualmem.learners import LearnerContext, available, learner_class

from .conftest import digits_stream, perturb_classes

ENC = EncoderParams([32, 32], "first_task", 2, 1e-3, 64)


def make_learner(name, stream, tiny_params):
    encoder, _ = train_stream_encoder(stream, ENC, progress=False)
    ctx = LearnerContext(encoder, stream.n_classes, stream.seed, stream.x_train, 14400)
    cls = learner_class(name)
    return cls(cls.parse(Section.of(tiny_params, f"learners.{name}")), ctx)


def state_tensors(state) -> list[torch.Tensor]:
    if isinstance(state, dict):
        return [t for value in state.values() for t in state_tensors(value)]
    if isinstance(state, list | tuple):
        return [t for value in state for t in state_tensors(value)]
    return [state] if isinstance(state, torch.Tensor) else []


def test_encoder_is_blind_to_later_classes(digits):
    stream = digits_stream(digits)
    later = [c for t in stream.spec.tasks[1:] for c in t]
    a, fitted = train_stream_encoder(stream, ENC, progress=False)
    b, _ = train_stream_encoder(digits_stream(perturb_classes(digits, later)), ENC, progress=False)
    assert fitted == list(stream.task_classes(0))
    for pa, pb in zip(a.parameters(), b.parameters(), strict=True):
        assert torch.equal(pa, pb)
    # and it does depend on the first task's data (so the check above can fail)
    c, _ = train_stream_encoder(digits_stream(perturb_classes(digits, fitted)), ENC, progress=False)
    assert not all(torch.equal(pa, pc) for pa, pc in zip(a.parameters(), c.parameters(), strict=True))


@pytest.mark.parametrize("name", available())
def test_learner_state_after_task_ignores_future_classes(name, digits, tiny_params):
    stream = digits_stream(digits)
    future = [c for t in stream.spec.tasks[2:] for c in t]
    perturbed = digits_stream(perturb_classes(digits, future))
    a, b = make_learner(name, stream, tiny_params), make_learner(name, perturbed, tiny_params)
    for index in range(2):
        for learner, s in ((a, stream), (b, perturbed)):
            learner.learn_task(s.task(index))
            learner.sleep(s.task(index))
    assert a.visible_classes == set(stream.classes_up_to(1))
    assert states_equal(a, b), f"{name}: its state after task 2 depends on classes not yet revealed"


def states_equal(a, b) -> bool:
    ta, tb = state_tensors(a.state_dict()), state_tensors(b.state_dict())
    return len(ta) == len(tb) and all(torch.equal(x, y) for x, y in zip(ta, tb, strict=True))


def test_the_state_comparison_catches_a_learner_that_peeks(digits, tiny_params):
    """Positive control: a learner fed one future-class batch differs between the two data sets."""
    stream = digits_stream(digits)
    future = [c for t in stream.spec.tasks[2:] for c in t]
    perturbed = digits_stream(perturb_classes(digits, future))
    a, b = make_learner("finetune", stream, tiny_params), make_learner("finetune", perturbed, tiny_params)
    for learner, s in ((a, stream), (b, perturbed)):
        learner.learn_task(s.task(0))
        learner.visible_classes |= set(future)  # the peek: bypasses the guard
        x, y = s.task(2).x[:32], s.task(2).y[:32]
        learner.before_task(s.task(2))  # a fresh optimiser, as any task start
        learner.guarded_observe(x, y, s.task(2).ids[:32])
    assert not states_equal(a, b)


@pytest.mark.parametrize("name", available())
def test_observing_an_unrevealed_class_raises(name, digits, tiny_params):
    stream = digits_stream(digits)
    learner = make_learner(name, stream, tiny_params)
    learner.learn_task(stream.task(0))
    x, y = stream.test_split(stream.task_classes(1))
    with pytest.raises(LeakageError):
        learner.guarded_observe(x[:8], y[:8], np.arange(8))


def test_openworld_stream_never_exposes_novel_classes(digits, tiny_params):
    stream = digits_stream(digits, "openworld")
    novel = stream.held_out
    perturbed = digits_stream(perturb_classes(digits, novel), "openworld")
    for s in (stream, perturbed):
        for task in s.tasks():
            assert not set(task.y.tolist()) & set(novel)
    a, b = make_learner("dualmem", stream, tiny_params), make_learner("dualmem", perturbed, tiny_params)
    for learner, s in ((a, stream), (b, perturbed)):
        for task in s.tasks():
            learner.learn_task(task)
            learner.sleep(task)
    assert not set(a.episodic.labels.tolist()) & set(novel)
    for ta, tb in zip(state_tensors(a.state_dict()), state_tensors(b.state_dict()), strict=True):
        assert torch.equal(ta, tb)
    with pytest.raises(ValueError):
        stream.train_split(stream.task_classes(0))
