"""Test 2 (few-shot) on a small synthetic open world: no MNIST, no files."""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from dualmem.core.errors import LeakageError, ParamsError
from dualmem.core.params import Section
from dualmem.data.sources import Dataset
from dualmem.data.splits import ProtocolParams, make_manifest
from dualmem.data.stream import Stream
from dualmem.encoders import Encoder
from dualmem.evals.fewshot import EpisodeSampler, FewshotParams, evaluate_learner
from dualmem.learners import Learner, LearnerContext, learner_class
from dualmem.learners.common.base import check_unrevealed
from dualmem.learners.common.readouts import HeadFit, fit_heads
from dualmem.tuning import ValidationView

ROOT = Path(__file__).resolve().parents[1]
TINY = yaml.safe_load((ROOT / "profiles" / "tiny.yaml").read_text())
# these tests read learners through an identity encoder (features = pixels): the dual memory keeps it
# frozen and keys on the features alone, so "perfect features" reach its readouts unchanged
TINY["learners"]["dualmem"]["encoder"]["mode"] = "frozen"
TINY["learners"]["dualmem"]["episodic"]["key"] = "features"
DIM = 20


def make_stream(seed: int = 0, n_train: int = 30, n_test: int = 20, signal: bool = True) -> Stream:
    """10 well-separated classes: class c lights features 2c and 2c+1 (uint8 codes, scale 1/255);
    without `signal`, every item is pure noise whatever its label."""
    rng = np.random.default_rng(seed)

    def split(n: int) -> tuple[np.ndarray, np.ndarray]:
        y = np.repeat(np.arange(10), n)
        x = rng.integers(0, 31 if signal else 256, size=(len(y), DIM))
        if signal:
            x[np.arange(len(y)), 2 * y] = 230
            x[np.arange(len(y)), 2 * y + 1] = 230
        return x.astype(np.uint8), y.astype(np.int64)

    (xtr, ytr), (xte, yte) = split(n_train), split(n_test)
    dataset = Dataset("synthetic", xtr, ytr, xte, yte, 1 / 255, (4, 5))
    protocol = ProtocolParams("shuffled", [[0, 1], [2, 3], [4, 5], [6, 7], [8, 9]], 4, 2)
    return Stream(dataset, make_manifest(seed, "synthetic", 10, protocol), "openworld")


def make_learner(name: str, stream: Stream, params: dict = TINY) -> Learner:
    """A learner on an identity encoder (features = pixels), taken through the whole stream."""
    ctx = LearnerContext(Encoder(DIM, []), stream.n_classes, stream.seed, stream.x_train)
    cls = learner_class(name)
    learner = cls(cls.parse(Section.of(params, f"learners.{name}")), ctx)
    for task in stream.tasks():
        learner.learn_task(task)
        learner.sleep(task)
    return learner


def fewshot_cfg(**overrides: object) -> FewshotParams:
    params = copy.deepcopy(TINY)
    params["evaluate_fewshot"].update({"episodes": 20, **overrides})
    params["evaluate_fewshot"]["generalised"]["episodes"] = 5
    return FewshotParams.from_params(params)


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def stream() -> Stream:
    return make_stream()


@pytest.fixture(scope="module")
def learners(stream: Stream) -> dict[str, Learner]:
    return {name: make_learner(name, stream) for name in ("finetune", "dualmem")}


def pool(stream: Stream) -> tuple[np.ndarray, np.ndarray]:
    y = torch.cat([stream.train_split(stream.held_out)[1], stream.test_split(stream.held_out)[1]])
    is_test = np.arange(len(y)) >= len(stream.train_split(stream.held_out)[1])
    return y.numpy(), is_test


def test_episodes_have_right_counts_and_never_reuse_a_query_as_a_shot(stream: Stream) -> None:
    y, is_test = pool(stream)
    sampler = EpisodeSampler(y, is_test)
    for shots in (1, 5):
        for e in range(50):
            ep = sampler.fewshot(stream.held_out, 3, shots, 7, seed=0, episode=e)
            assert len(ep.classes) == 3 and set(ep.classes) <= set(stream.held_out)
            assert len(ep.support) == 3 * shots and len(ep.query) == 3 * 7
            assert np.bincount(ep.support_y).tolist() == [shots] * 3
            assert np.bincount(ep.query_y).tolist() == [7] * 3
            assert not set(ep.support.tolist()) & set(ep.query.tolist())
            assert len(set(ep.support.tolist())) == len(ep.support)  # no repeated shot
            assert not is_test[ep.support].any() and is_test[ep.query].all()
            local = np.array(ep.classes)
            assert (y[ep.support] == local[ep.support_y]).all()
            assert (y[ep.query] == local[ep.query_y]).all()


def test_episode_sampling_is_deterministic_per_seed_k_and_episode(stream: Stream) -> None:
    y, is_test = pool(stream)
    a, b = EpisodeSampler(y, is_test), EpisodeSampler(y, is_test)
    first = a.fewshot(stream.held_out, 4, 1, 5, seed=3, episode=7)
    again = b.fewshot(stream.held_out, 4, 1, 5, seed=3, episode=7)
    other = a.fewshot(stream.held_out, 4, 1, 5, seed=3, episode=8)
    assert np.array_equal(first.support, again.support) and np.array_equal(first.query, again.query)
    assert not np.array_equal(first.query, other.query)


def test_too_many_queries_names_the_key(stream: Stream) -> None:
    y, is_test = pool(stream)
    with pytest.raises(ParamsError, match="evaluate_fewshot.queries"):
        EpisodeSampler(y, is_test).fewshot(stream.held_out, 4, 1, 999, seed=0, episode=0)


def test_params_validation_names_the_key() -> None:
    with pytest.raises(ParamsError, match="evaluate_fewshot.ways"):
        fewshot_cfg(ways=5)  # only 4 novel classes
    with pytest.raises(ParamsError, match="evaluate_fewshot.episodes"):
        fewshot_cfg(episodes=0)
    params = copy.deepcopy(TINY)
    params["evaluate_fewshot"]["head"]["lr"] = "fast"
    with pytest.raises(ParamsError, match="evaluate_fewshot.head.lr"):
        FewshotParams.from_params(params)


def test_batched_heads_learn_separable_episodes() -> None:
    gen = torch.Generator().manual_seed(0)
    xs = torch.randn(6, 8, 5, generator=gen)
    ys = torch.randint(0, 2, (6, 8), generator=gen)
    xs[..., 0] = torch.where(ys == 1, 3.0, -3.0)
    weight, bias = fit_heads(xs, ys, 2, HeadFit(steps=100, lr=0.05))
    assert (torch.baddbmm(bias, xs, weight).argmax(2) == ys).all()


def test_perfect_features_give_perfect_fewshot_accuracy(stream: Stream, learners: dict) -> None:
    metrics, cis = evaluate_learner(learners["dualmem"], stream, fewshot_cfg())
    assert metrics["acc_k1"] == 1.0 and metrics["acc_k5"] == 1.0
    assert cis["acc_k1"] == 0.0
    assert metrics["gen_acc_novel"] > 0.9 and metrics["gen_acc_known"] > 0.9
    gradient, _ = evaluate_learner(learners["finetune"], stream, fewshot_cfg())
    assert gradient["acc_k5"] > 0.9


def test_chance_features_give_chance_accuracy() -> None:
    noisy = make_stream(signal=False)
    metrics, _ = evaluate_learner(make_learner("dualmem", noisy), noisy, fewshot_cfg(episodes=100))
    assert 0.1 < metrics["acc_k1"] < 0.45


def test_results_are_deterministic(stream: Stream, learners: dict) -> None:
    cfg = fewshot_cfg()
    for learner in learners.values():
        assert evaluate_learner(learner, stream, cfg) == evaluate_learner(learner, stream, cfg)


def assert_same_state(got: object, want: object, where: str = "state") -> None:
    """Two saved learner states are equal, tensor by tensor."""
    assert type(got) is type(want), where
    if isinstance(want, dict):
        assert got.keys() == want.keys(), where
        for key in want:
            assert_same_state(got[key], want[key], f"{where}.{key}")
    elif isinstance(want, torch.Tensor):
        assert torch.equal(got, want), where
    elif isinstance(want, np.ndarray):
        assert np.array_equal(got, want), where
    else:
        assert got == want, where


class Snapshot:
    """What a learner is: its saved state, the classes it knows, and what its capabilities answer on
    probe inputs (a state saved by item id omits derived tensors such as memory keys; the answers
    cover them)."""

    def __init__(self, learner: Learner, probe: torch.Tensor) -> None:
        self.state = copy.deepcopy(learner.state_dict())
        self.known = learner.known_classes()
        feats = learner.features(probe)
        self.answers = (feats, learner.proba_from_features(feats), learner.novelty_from_features(feats))

    def assert_unchanged(self, learner: Learner, probe: torch.Tensor) -> None:
        now = Snapshot(learner, probe)
        assert_same_state(now.state, self.state)
        assert now.known == self.known
        for got, want in zip(now.answers, self.answers, strict=True):
            assert torch.equal(got, want)


def test_novel_classes_never_reach_a_learner_before_its_test(stream: Stream, learners: dict
                                                             ) -> None:
    novel = set(stream.held_out)
    probe = stream.test_split(list(range(stream.n_classes)))[0]
    before = {}
    for name, learner in learners.items():
        # known_classes: every class a learner fit a parameter or stored an item for (dualmem: its
        # episodic and semantic memories included)
        assert not learner.known_classes() & novel
        before[name] = Snapshot(learner, probe)
    for learner in learners.values():
        evaluate_learner(learner, stream, fewshot_cfg())
    # the episodes ran on copies: the loaded learners are exactly as the stream left them
    for name, learner in learners.items():
        before[name].assert_unchanged(learner, probe)


def test_leaked_learner_is_refused(stream: Stream) -> None:
    learner = make_learner("dualmem", stream)
    x, y = stream.test_split(stream.held_out[:1])
    learner.observe(x[:2], y[:2], np.full(2, -1))  # two items of unrevealed classes, written anyway
    with pytest.raises(LeakageError):
        check_unrevealed(learner, stream.held_out)


@pytest.mark.parametrize("held_out_tasks", [1, 2])
def test_validation_holds_out_the_last_tasks_of_k_and_never_reads_u(held_out_tasks: int) -> None:
    stream = make_stream()
    stored = stream.task(0).ids[:5]
    view = ValidationView(stream, stored, held_out_tasks)
    last = range(stream.n_tasks - held_out_tasks, stream.n_tasks)
    assert view.held_out == [c for i in last for c in stream.task_classes(i)]
    assert sorted(view.known + view.held_out) == sorted(stream.classes_up_to(stream.n_tasks - 1))
    assert not set(view.held_out) & set(stream.held_out)
    shots_y, queries_y = view.train_split(view.held_out)[1], view.test_split(view.held_out)[1]
    assert set(shots_y.tolist()) == set(queries_y.tolist()) == set(view.held_out)
    assert not np.intersect1d(view.shot_ids, view.query_ids).size  # a query is never a shot
    assert set(view.test_split(view.known)[1].tolist()) == set(view.known)
    assert not np.isin(stored, view.known_ids).any()  # known-class queries are items the memory did not keep
