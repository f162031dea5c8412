"""The frozen-base learners: `lora` (per-task low-rank adapters), `slda` (Deep Streaming LDA) and
`knn_pixels` (a raw-image kNN memory). What is specific to each and can fail: adapters start at the
base and never touch it or earlier tasks; the vectorised SLDA update equals the paper's per-sample
rule and its classifier equals LDA; the pixel memory stays within the byte budget at raw bytes."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from sklearn.discriminant_analysis import LinearDiscriminantAnalysis

from dualmem.core.params import Section
from dualmem.data.sources import Dataset
from dualmem.encoders import new_encoder
from dualmem.evals.recall_protocol import RecallParams, make_recall_stream
from dualmem.learners import LearnerContext, learner_class
from dualmem.learners.common.readouts import Episodes, HeadFit
from dualmem.learners.slda import StreamingLDA

from .conftest import digits_stream

CONFIGS = {
    "lora": {"epochs": 10, "lr": 0.01, "batch_size": 32, "rank": 4, "alpha": 8.0},
    "slda": {"shrinkage": 1e-4, "batch_size": 37},
    "knn_pixels": {"batch_size": 32, "k": 5, "temperature": 0.05, "novelty_k": 3},
}
RECALL = RecallParams.from_params({"evaluate_recall": {
    "sizes": [20, 60, 150], "n_targets": 4, "noise_std": 0.1, "dropout": 0.1, "k": 1, "candidates": 0,
    "age_bins": 2, "query_batch": 64, "online": {"batch_size": 10, "lr": 0.001},
    "offline": {"epochs": 1, "batch_size": 32, "min_steps": 1, "lr": 0.001}}})


def make(name: str, digits: Dataset, budget: int | None = None, seed: int = 0):
    stream = digits_stream(digits, seed=seed)
    enc = new_encoder(stream.dataset.n_features, [32, 32], "frozen-test", seed).eval()
    cls = learner_class(name)
    cfg = cls.parse(Section.of({"learners": CONFIGS}, f"learners.{name}"))
    return cls(cfg, LearnerContext(enc, stream.n_classes, seed, stream.x_train, budget)), stream


# -- lora -------------------------------------------------------------------------------------------
def test_lora_adapters_start_at_base_then_leave_base_and_old_tasks_untouched(digits, one_thread) -> None:
    learner, stream = make("lora", digits)
    base = copy.deepcopy(learner.ctx.encoder.state_dict())
    tasks = list(stream.tasks())
    learner.before_task(tasks[0])
    x = tasks[0].x[:16]
    assert torch.allclose(learner.network(0)(x), learner.base(x))  # B = 0: the adapted net is the base
    learner.fit(tasks[0])
    learner.after_task(tasks[0])
    first = copy.deepcopy((learner.adapters[0].state_dict(), learner.heads[0].state_dict()))
    learner.learn_task(tasks[1])
    for key, value in learner.base.state_dict().items():
        assert torch.equal(value, base[key])
    for key, value in learner.ctx.encoder.state_dict().items():
        assert torch.equal(value, base[key])
    for got, want in zip((learner.adapters[0].state_dict(), learner.heads[0].state_dict()), first, strict=True):
        assert all(torch.equal(got[k], want[k]) for k in want)
    # each task's adapters learned its task (task-aware readout), and the class-incremental readout is
    # the softmax over the concatenation of the tasks' own-class logits, 0 for classes of no task
    feats = learner.features(stream.test_split(list(range(10)))[0])
    assert feats.shape[1] == 2 * learner.base.out_dim
    for t, task in enumerate(tasks[:2]):
        xt, yt = stream.test_split(task.classes)
        logits = learner.heads[t](learner.network(t)(xt))
        assert (torch.tensor(task.classes)[logits.argmax(1)] == yt).float().mean() > 0.9
    proba = learner.proba_from_features(feats)
    seen = [c for task in tasks[:2] for c in task.classes]
    unseen = sorted(set(range(10)) - set(seen))
    assert torch.allclose(proba.sum(1), torch.ones(len(proba)))
    assert torch.equal(proba[:, unseen], torch.zeros(len(proba), len(unseen)))


# -- slda -------------------------------------------------------------------------------------------
def reference_slda(x: torch.Tensor, y: torch.Tensor, n_classes: int) -> tuple[torch.Tensor, ...]:
    """The per-sample update of Hayes & Kanan's reference code (Deep_SLDA, SLDA_Model.fit), in float64."""
    x = x.double()
    mu, count = torch.zeros(n_classes, x.shape[1], dtype=torch.float64), torch.zeros(n_classes, dtype=torch.float64)
    sigma = torch.ones(x.shape[1], x.shape[1], dtype=torch.float64)  # the reference init; the first update erases it
    for n in range(len(y)):
        k = int(y[n])
        d = (x[n] - mu[k]).unsqueeze(0)
        sigma = (n * sigma + d.T @ d * n / (n + 1)) / (n + 1)
        mu[k] += (x[n] - mu[k]) / (count[k] + 1)
        count[k] += 1
    return mu, count, sigma


@pytest.mark.parametrize("batch", [1, 7, 64, 500])
def test_slda_batch_update_equals_the_per_sample_rule(batch: int) -> None:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(300, 6, generator=g) + 3.0
    y = torch.randint(0, 4, (300,), generator=g)
    mu, count, sigma = reference_slda(x, y, 4)
    lda = StreamingLDA(6, 4, 1e-4)
    for start in range(0, 300, batch):
        lda.fit(x[start : start + batch], y[start : start + batch])
    assert lda.n == 300 and torch.equal(lda.count, count.float())
    assert torch.allclose(lda.mu.double(), mu, atol=1e-5)
    assert torch.allclose(lda.sigma.double(), sigma, atol=1e-4)


def test_slda_matches_sklearn_lda(digits) -> None:
    x, y = torch.from_numpy(digits.x_train).float() / 16, torch.from_numpy(digits.y_train).long()
    xt = torch.from_numpy(digits.x_test).float() / 16
    lda = StreamingLDA(x.shape[1], 10, 1e-4)
    lda.fit(x, y)
    pooled = sum(((x[y == k] - x[y == k].mean(0)).T @ (x[y == k] - x[y == k].mean(0))) for k in range(10)) / len(y)
    # the streaming estimate of the pooled within-class covariance (biased up a little: each item meets
    # its class's mean over the items before it)
    assert float(torch.linalg.norm(lda.sigma - pooled) / torch.linalg.norm(pooled)) < 0.2
    sk = LinearDiscriminantAnalysis(solver="lsqr", shrinkage=None, priors=np.full(10, 0.1)).fit(x.numpy(), y.numpy())
    agree = (lda.scores(xt).argmax(1).numpy() == sk.predict(xt.numpy())).mean()
    assert agree > 0.97


def test_slda_fewshot_and_recall(digits) -> None:
    learner, stream = make("slda", digits)
    for task in stream.tasks():
        learner.learn_task(task)
    # one shot per class: the query equal to a shot is scored highest for that shot's class
    feats = learner.features(stream.x_train[:4]).unsqueeze(0)
    episodes = Episodes(feats, torch.arange(4).unsqueeze(0), feats, torch.arange(4).unsqueeze(0))
    assert torch.equal(learner.fewshot_scores(episodes, HeadFit(1, 0.1)).argmax(2)[0], torch.arange(4))
    # recall: prefix readouts equal a fresh SLDA fit on each prefix
    rs = make_recall_stream(stream.x_train, RECALL, seed=0)
    out = learner.recall(rs, RECALL)
    assert list(out.recall) == rs.sizes and len(out.correct) == rs.n_max
    for n in rs.sizes:
        fresh = StreamingLDA(learner.encoder.out_dim, RECALL.n_targets, 1e-4)
        fresh.fit(learner.features(rs.cues[:n]), rs.targets[:n])
        hits = fresh.scores(learner.features(rs.queries[:n])).argmax(1) == rs.targets[:n]
        assert out.recall[n] == pytest.approx(float(hits.float().mean()))


# -- knn_pixels -------------------------------------------------------------------------------------
def test_knn_pixels_keeps_raw_items_within_budget(digits) -> None:
    budget = 100 * (digits.x_train.shape[1] + 8)  # 100 raw items
    learner, stream = make("knn_pixels", digits, budget=budget)
    for task in stream.tasks():
        learner.learn_task(task)
    cost = learner.memory_cost()
    assert cost["items"] == 100 and cost["item_bytes"] == budget and cost["param_bytes"] == 0
    counts = torch.bincount(learner.memory.labels, minlength=10)
    assert counts.max() - counts.min() <= 1  # class-balanced
    stored = learner.ctx.train_x[torch.from_numpy(learner.memory.ids)]
    assert torch.equal(learner.predict(stored[:20]), learner.memory.labels[:20])  # nearest is itself
    novelty = learner.novelty_from_features(torch.cat([stored[:10], torch.rand(10, stored.shape[1])]))
    assert novelty[:10].max() < novelty[10:].min()
    rs = make_recall_stream(stream.x_train, RECALL, seed=0)
    assert learner.recall(rs, RECALL).bytes_per_item == learner.ctx.raw_item_bytes
