"""Rehearsal learners (icarl, gdumb, clser): the mechanisms specific to each, on scikit-learn digits."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from torch.nn import functional as F

from dualmem.core.params import Section
from dualmem.encoders import EncoderParams, train_stream_encoder
from dualmem.learners import learner_class
from dualmem.learners.common.base import LearnerContext
from dualmem.learners.common.readouts import Episodes, HeadFit
from dualmem.learners.icarl import herding

from .conftest import digits_stream

ENC = EncoderParams([32, 32], "first_task", 2, 1e-3, 64)
BUDGET = 72 * 60  # 60 raw 8x8 digits
CONFIGS = {
    "icarl": {"epochs": 1, "lr": 0.001, "batch_size": 64, "temperature": 0.1},
    "gdumb": {"epochs": 3, "lr": 0.001, "min_lr": 0.00001, "batch_size": 32, "clip": 10.0},
    "clser": {"epochs": 1, "lr": 0.001, "batch_size": 64, "replay_batch_size": 32, "reg_weight": 2.0,
              "plastic_update_freq": 1.0, "plastic_alpha": 0.9, "stable_update_freq": 0.8, "stable_alpha": 0.95},
}


@pytest.fixture(scope="module")
def setup(digits, one_thread):
    stream = digits_stream(digits)
    encoder, _ = train_stream_encoder(stream, ENC, progress=False)
    return stream, encoder


def make(name, setup, budget=BUDGET, **overrides):
    stream, encoder = setup
    cls = learner_class(name)
    cfg = cls.parse(Section({**CONFIGS[name], **overrides}, f"learners.{name}"))
    return cls(cfg, LearnerContext(encoder, stream.n_classes, stream.seed, stream.x_train, budget))


def naive_herding(feats: torch.Tensor, m: int) -> list[int]:
    mu, chosen, total = feats.mean(0), [], torch.zeros(feats.shape[1], dtype=feats.dtype)
    for k in range(1, m + 1):
        dist = ((mu - (total + feats) / k) ** 2).sum(1)
        dist[chosen] = float("inf")
        p = int(dist.argmin())
        chosen.append(p)
        total = total + feats[p]
    return chosen


# -- icarl ----------------------------------------------------------------------------------------
def test_herding_matches_the_definition_and_picks_the_mean_closest_first():
    feats = F.normalize(torch.rand(300, 16, generator=torch.Generator().manual_seed(0), dtype=torch.float64), dim=1)
    order = herding(feats, 40)
    assert order.tolist() == naive_herding(feats, 40)
    assert int(order[0]) == int(((feats - feats.mean(0)) ** 2).sum(1).argmin())
    assert len(set(order.tolist())) == 40
    assert torch.equal(herding(feats, 10), order[:10])  # a prefix of a herded set is the smaller herded set
    assert len(herding(feats, 1000)) == 300


def test_icarl_exemplars_are_balanced_within_budget_and_nme_predicts_nearest_mean(setup):
    stream = setup[0]
    learner = make("icarl", setup)
    capacity = BUDGET // learner.ctx.raw_item_bytes
    for t, task in enumerate(stream.tasks()):
        learner.learn_task(task)
        counts = torch.bincount(learner.exemplar_labels, minlength=stream.n_classes)
        seen = stream.classes_up_to(t)
        assert len(learner.exemplar_ids) <= capacity
        assert set(torch.nonzero(counts).flatten().tolist()) == set(seen)
        assert counts[seen].min() == counts[seen].max() == capacity // len(seen)
        assert torch.equal(torch.from_numpy(stream.dataset.y_train)[learner.exemplar_ids], learner.exemplar_labels)
        if t == 1:
            break
    x, _ = stream.test_split(list(range(stream.n_classes)))
    proba = learner.predict_proba(x)
    unseen = [c for c in range(stream.n_classes) if c not in stream.classes_up_to(1)]
    assert torch.allclose(proba.sum(1), torch.ones(len(x)))
    assert proba[:, unseen].abs().max() == 0
    f = F.normalize(learner.features(x), dim=1)
    means = learner.class_means[stream.classes_up_to(1)]
    nearest = torch.tensor(stream.classes_up_to(1))[torch.cdist(f, means).argmin(1)]
    assert torch.equal(learner.predict(x), nearest)
    assert torch.allclose(means.norm(dim=1), torch.ones(len(means)), atol=1e-5)


def test_icarl_distills_old_classes_toward_the_network_before_the_task(setup):
    stream = setup[0]
    learner = make("icarl", setup)
    tasks = list(stream.tasks())
    learner.learn_task(tasks[0])
    before = copy.deepcopy((learner.encoder, learner.head))
    task = tasks[1]
    learner.before_task(task)
    ids = torch.cat([torch.from_numpy(task.ids), learner.exemplar_ids])
    learner.start_distillation(ids, learner.ctx.train_x[ids])
    x = learner.ctx.train_x[ids[:5]]
    expected = torch.sigmoid(before[1](before[0](x)))
    got = learner.distill_targets[learner.distill_row[ids[:5]]]
    assert torch.allclose(got, expected, atol=1e-6)


def test_icarl_fewshot_is_nearest_shot_mean(setup):
    learner = make("icarl", setup)
    support = torch.tensor([[[1.0, 0.0], [0.9, 0.1], [0.0, 1.0]]])
    episodes = Episodes(support=support, support_y=torch.tensor([[0, 0, 1]]),
                        query=torch.tensor([[[0.2, 1.0], [1.0, 0.3]]]), classes=torch.tensor([[7, 8]]))
    scores = learner.fewshot_scores(episodes, HeadFit(1, 0.1))
    assert scores.shape == (1, 2, 2)
    assert scores.argmax(2).tolist() == [[1, 0]]


# -- gdumb ----------------------------------------------------------------------------------------
def test_gdumb_never_trains_on_the_stream_and_retrains_from_the_initial_network(setup):
    stream = setup[0]
    learner = make("gdumb", setup)
    initial = [p.clone() for p in learner.parameters()]
    tasks = list(stream.tasks())
    learner.before_task(tasks[0])
    learner.fit(tasks[0])
    assert all(torch.equal(a, b) for a, b in zip(initial, learner.parameters(), strict=True))
    learner.after_task(tasks[0])
    learner.learn_task(tasks[1])
    # the same memory retrained from the initial network gives the same network: history does not matter
    other = make("gdumb", setup)
    other.buffer.load_state_dict(copy.deepcopy(learner.buffer.state_dict()))
    other.tasks_seen = 1
    other.retrain(tasks[1])
    assert all(torch.equal(a, b) for a, b in zip(learner.parameters(), other.parameters(), strict=True))
    counts = torch.bincount(learner.buffer.labels, minlength=stream.n_classes)
    seen = stream.classes_up_to(1)
    assert len(learner.buffer) == BUDGET // learner.ctx.raw_item_bytes
    assert int(counts[seen].max() - counts[seen].min()) <= 1
    x, _ = stream.test_split(list(range(stream.n_classes)))
    proba = learner.predict_proba(x)
    unseen = [c for c in range(stream.n_classes) if c not in seen]
    assert proba[:, unseen].abs().max() == 0
    assert set(learner.predict(x).tolist()) <= set(seen)


# -- clser ----------------------------------------------------------------------------------------
def test_clser_ema_updates_with_warmup_and_counts_three_models(setup):
    learner = make("clser", setup, stable_update_freq=0.0)
    stream = setup[0]
    stable0 = [p.clone() for p in learner.stable.parameters()]
    task = next(iter(stream.tasks()))
    learner.before_task(task)
    plastic0 = [p.clone() for p in learner.plastic.parameters()]
    x, y, ids = next(task.batches(64, 0))
    learner.observe(x, y, ids)  # global step 1: decay min(1 - 1/2, 0.9) = 0.5
    for ema, old, w in zip(learner.plastic.parameters(), plastic0, learner.parameters(), strict=True):
        assert torch.allclose(ema, 0.5 * old + 0.5 * w, atol=1e-6)
    learner.global_step = 1000
    plastic1 = [p.clone() for p in learner.plastic.parameters()]
    learner.ema_update(learner.plastic, 0.9)  # past the warm-up: decay alpha
    for ema, old, w in zip(learner.plastic.parameters(), plastic1, learner.parameters(), strict=True):
        assert torch.allclose(ema, 0.9 * old + 0.1 * w, atol=1e-6)
    # r_s = 0: the stable model never moves, and it is the one that predicts
    learner.fit(task)
    learner.after_task(task)
    assert all(torch.equal(a, b) for a, b in zip(stable0, learner.stable.parameters(), strict=True))
    xt, _ = stream.test_split(list(task.classes))
    assert torch.allclose(learner.predict_proba(xt), torch.softmax(learner.stable(xt), 1))
    n_params = sum(p.numel() for p in learner.parameters())
    cost = learner.memory_cost()
    assert cost["params"] == 3 * n_params
    assert cost["items"] == len(learner.buffer) <= BUDGET // learner.ctx.raw_item_bytes
    assert cost["item_bytes"] == cost["items"] * learner.ctx.raw_item_bytes


def test_clser_consistency_target_is_the_model_more_confident_in_the_true_label(setup):
    learner = make("clser", setup)
    torch.manual_seed(0)
    for p in learner.plastic.parameters():
        p.add_(torch.randn_like(p))
    x = learner.ctx.train_x[:50]
    y = torch.from_numpy(np.arange(50) % 10)
    target = learner.semantic_logits(x, y)
    stable, plastic = learner.stable(x), learner.plastic(x)
    ps, pp = torch.softmax(stable, 1)[torch.arange(50), y], torch.softmax(plastic, 1)[torch.arange(50), y]
    assert (ps > pp).any() and (ps <= pp).any()
    assert torch.equal(target[ps > pp], stable[ps > pp])
    assert torch.equal(target[ps <= pp], plastic[ps <= pp])
