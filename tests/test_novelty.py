# ruff: noqa: F811  (the `stream` and `learners` fixtures are imported from test_fewshot)
"""Test 3 (novelty detection): the detection metrics and the scorers, on synthetic data only."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from sklearn.metrics import roc_auc_score
from torch.nn import functional as F

from dualmem.core.errors import LeakageError, ParamsError
from dualmem.core.params import Section
from dualmem.data.sources import Dataset
from dualmem.data.stream import Stream
from dualmem.detection_metrics import auroc, detection_metrics, fpr_at_tpr, mean_roc, roc_points
from dualmem.evals.novelty import NoveltyParams, evaluate_learner, far_ood_sets, novelty_scores, result_rows
from dualmem.learners import Learner, learner_class
from tests.test_fewshot import (  # noqa: F401 (fixtures)
    DIM,
    TINY,
    Snapshot,
    learners,
    make_learner,
    make_stream,
    stream,
)

pytestmark = pytest.mark.usefixtures("one_thread")


def novelty_cfg(**far: object) -> NoveltyParams:
    params = copy.deepcopy(TINY)
    params["evaluate_novelty"]["far_ood"].update(far)
    return NoveltyParams.from_params(params)


# -- metrics ----------------------------------------------------------------------------------
def test_auroc_matches_sklearn_and_is_half_for_a_random_scorer() -> None:
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 20_000)
    scores = rng.normal(size=20_000)
    assert abs(auroc(y, scores) - 0.5) < 0.05
    shifted = scores + 0.7 * y
    assert auroc(y, shifted) == pytest.approx(roc_auc_score(y, shifted))
    tied = np.round(shifted, 1)  # many ties: each tie counts half, as in sklearn
    assert auroc(y, tied) == pytest.approx(roc_auc_score(y, tied))
    assert auroc(y, -y.astype(float)) == 0.0  # reversed convention would give 0


def test_auroc_of_a_perfect_scorer_is_exactly_one() -> None:
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 20_000)
    rng.normal(size=20_000)  # the draws of the test above, so the same scores as before
    assert auroc(y, y + 0.1 * rng.random(20_000)) == 1.0  # perfect: every novel item above


def test_fpr_at_tpr_by_hand() -> None:
    # novel (1) scores 0.9 0.8 0.7 0.6 0.2; familiar (0) scores 0.75 0.5 0.3 0.1
    y = np.array([1, 1, 1, 1, 1, 0, 0, 0, 0])
    s = np.array([0.9, 0.8, 0.7, 0.6, 0.2, 0.75, 0.5, 0.3, 0.1])
    # TPR >= 0.95 needs all 5 novel flagged: threshold 0.2 flags familiar 0.75 0.5 0.3 -> 3/4
    assert fpr_at_tpr(y, s, 0.95) == 0.75
    # TPR >= 0.8 needs 4 of 5: threshold 0.6 flags familiar 0.75 only -> 1/4
    assert fpr_at_tpr(y, s, 0.8) == 0.25
    # TPR >= 0.2 needs 1: threshold 0.9 flags no familiar item
    assert fpr_at_tpr(y, s, 0.2) == 0.0
    assert detection_metrics(s[y == 0], s[y == 1], 0.8)["fpr_at_tpr"] == 0.25
    with pytest.raises(ValueError):
        fpr_at_tpr(np.ones(3), np.arange(3.0))  # no familiar item


def test_roc_points_are_downsampled_and_keep_the_ends() -> None:
    rng = np.random.default_rng(1)
    y = rng.integers(0, 2, 5000)
    curve = roc_points(y, rng.normal(size=5000) + y, max_points=50)
    assert len(curve["fpr"]) <= 50 and curve["fpr"][0] == 0.0 and curve["tpr"][-1] == 1.0
    assert np.all(np.diff(curve["fpr"]) >= 0)
    mean = mean_roc([curve, curve], grid_size=11)
    assert len(mean["fpr"]) == 11 and mean["tpr"][-1] == 1.0


# -- params and far-OOD sets ------------------------------------------------------------------
def test_params_validation_names_the_key() -> None:
    with pytest.raises(ParamsError, match="evaluate_novelty.far_ood.gaussian_std"):
        novelty_cfg(gaussian_std=-1.0)
    # the kNN novelty score's k is the dual memory's own setting now (learners.dualmem.readout)
    section = copy.deepcopy(TINY["learners"]["dualmem"])
    section["readout"]["novelty_k"] = 0
    with pytest.raises(ParamsError, match="learners.dualmem.readout.novelty_k"):
        learner_class("dualmem").parse(Section(section, "learners.dualmem"))


def test_far_sets_are_deterministic_clipped_and_skip_missing_fashion(stream: Stream) -> None:
    cfg = novelty_cfg()
    sets, skipped = far_ood_sets(stream, cfg, load_aux=lambda name: None)
    again, _ = far_ood_sets(stream, cfg, load_aux=lambda name: None)
    assert "fashion" in skipped and set(sets) == {"gaussian", "uniform"}
    for name, x in sets.items():
        assert x.shape[1] == DIM and x.min() >= 0 and x.max() <= 1
        assert torch.equal(x, again[name])
    fake = Dataset("fashion_mnist", np.zeros((5, DIM), np.uint8), np.zeros(5, np.int64),
                   np.full((700, DIM), 9, np.uint8), np.zeros(700, np.int64), 1 / 255, (4, 5))
    sets, skipped = far_ood_sets(stream, cfg, load_aux=lambda name: fake)
    assert not skipped and len(sets["fashion"]) == cfg.fashion_n
    assert [r.metric for r in result_rows(cfg, ["gaussian"])][2] == "auroc_gaussian"


# -- scorers ----------------------------------------------------------------------------------
def test_knn_scorer_separates_clusters_from_far_points(stream: Stream, learners: dict) -> None:
    dual = learners["dualmem"]
    known = stream.classes_up_to(stream.n_tasks - 1)
    familiar = novelty_scores(dual, stream.test_split(known)[0])
    far = torch.zeros(200, DIM)
    far[:, -1] = 1.0  # a direction no stored item has
    novel = novelty_scores(dual, far + 0.01 * torch.rand(200, DIM))
    assert familiar.shape == (len(stream.test_split(known)[0]),) and novel.shape == (200,)
    assert auroc(np.r_[np.zeros(len(familiar)), np.ones(200)], np.r_[familiar, novel]) > 0.99


def test_knn_score_is_the_cosine_distance_to_the_kth_stored_item(stream: Stream) -> None:
    """learners.dualmem.readout.novelty_k sets k: with k = 1 a stored item is not novel at all."""
    first, tenth = dualmem_with_novelty_k(stream, 1), dualmem_with_novelty_k(stream, 10)
    x_seen = torch.cat([task.x for task in stream.tasks()])  # every item of the stream was written once
    assert np.allclose(novelty_scores(first, x_seen), 0.0, atol=1e-5)
    assert novelty_scores(tenth, x_seen).mean() > 0.01
    x = torch.rand(50, DIM)
    sims = F.normalize(tenth.features(x), dim=1) @ F.normalize(tenth.features(x_seen), dim=1).T
    want = 1.0 - sims.topk(10, dim=1).values[:, -1]
    assert np.allclose(novelty_scores(tenth, x), want.numpy(), atol=1e-5)


def dualmem_with_novelty_k(stream: Stream, k: int) -> Learner:
    """make_learner's dualmem with readout.novelty_k = k."""
    params = copy.deepcopy(TINY)
    params["learners"]["dualmem"]["readout"]["novelty_k"] = k
    return make_learner("dualmem", stream, params)


def test_evaluate_learner_on_the_open_world(stream: Stream, learners: dict) -> None:
    cfg = novelty_cfg()
    sets, _ = far_ood_sets(stream, cfg, load_aux=lambda name: None)
    metrics, curves = evaluate_learner(learners["dualmem"], stream, cfg, sets)
    names = {"novel", "gaussian", "uniform"}
    assert set(metrics) == {f"{m}_{n}" for m in ("auroc", cfg.fpr_name) for n in names}
    # U's clusters occupy features no K item lights: the kNN distance finds them all
    assert metrics["auroc_novel"] > 0.99 and metrics["fpr95_novel"] < 0.05
    assert set(curves) == names
    grad, grad_curves = evaluate_learner(learners["finetune"], stream, cfg, sets)
    assert set(grad) == set(metrics) and set(grad_curves) == names
    assert 0.0 <= grad["auroc_novel"] <= 1.0
    again, _ = evaluate_learner(learners["dualmem"], stream, cfg, sets)
    assert again == metrics


def test_novel_classes_never_reach_a_learner_before_its_test(stream: Stream, learners: dict
                                                             ) -> None:
    cfg = novelty_cfg()
    probe = stream.test_split(list(range(stream.n_classes)))[0]
    for learner in learners.values():
        assert not learner.known_classes() & set(stream.held_out)
        before = Snapshot(learner, probe)
        evaluate_learner(learner, stream, cfg, {})
        before.assert_unchanged(learner, probe)
    leaked = make_learner("finetune", stream)
    leaked.visible_classes.add(stream.held_out[0])
    with pytest.raises(LeakageError):
        evaluate_learner(leaked, stream, cfg, {})
