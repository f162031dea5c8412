"""Test 4 (feature transfer): the probe, the random column, subsampling, and the leakage rule."""

from __future__ import annotations

import copy
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from dualmem import runner
from dualmem.core.errors import LeakageError, ParamsError
from dualmem.core.params import Section
from dualmem.core.results import TestResults as Results  # not `Test*`: pytest would collect it
from dualmem.core.results import merge, metrics_path, results_path
from dualmem.encoders import new_encoder
from dualmem.evals import transfer
from dualmem.evals.transfer import (
    TransferParams,
    probe_accuracy,
    probe_columns,
    random_encoder_features,
    run_transfer,
    subsample,
)
from dualmem.learners import LearnerContext, learner_class
from dualmem.learners.common.base import check_unrevealed
from dualmem.plot_data import transfer_tables

from .conftest import SMALL_LEARNERS
from .test_fewshot import Snapshot

N_IN = 64
LEARNERS = SMALL_LEARNERS
COLUMNS = [*LEARNERS, transfer.RANDOM]  # each learner, and the untrained-encoder reference column
TRANSFER = {"max_iter": 100, "C": 1.0, "max_train": 200, "max_test": 150, "fashion": True,
            "batch_size": 64}


def params() -> dict:
    return {
        "run": {"learners": list(LEARNERS)},
        "protocol": {"openworld": {"seeds": [0, 1]}},
        "encoder": {"hidden": [32, 32], "mode": "first_task", "epochs": 1, "lr": 0.001,
                    "batch_size": 32},
        "learners": copy.deepcopy(LEARNERS),
        "evaluate_transfer": dict(TRANSFER),
    }


def make_learner(name: str, seed: int = 0):
    ctx = LearnerContext(new_encoder(N_IN, [32, 32], "test", seed), 10, seed, torch.rand(50, N_IN))
    cls = learner_class(name)
    return cls(cls.parse(Section.of({"learners": LEARNERS}, f"learners.{name}")), ctx)


def blobs(n: int, n_classes: int, dim: int, spread: float,
          seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(n_classes, dim)) * 10
    y = rng.integers(0, n_classes, n)
    return centres[y] + spread * rng.normal(size=(n, dim)), y


CFG = TransferParams.from_params({"evaluate_transfer": TRANSFER})


def test_probe_separable_features_near_perfect() -> None:
    f, y = blobs(600, 4, 16, spread=1.0, seed=0)
    assert probe_accuracy(f[:400], y[:400], f[400:], y[400:], CFG) >= 0.97


def test_probe_random_labels_near_chance() -> None:
    rng = np.random.default_rng(1)
    f, y = rng.normal(size=(1200, 20)), rng.integers(0, 4, 1200)
    acc = probe_accuracy(f[:400], y[:400], f[400:], y[400:], CFG)
    assert 0.17 <= acc <= 0.33


def test_random_column_deterministic_per_seed() -> None:
    x = torch.rand(20, N_IN)
    a = random_encoder_features(N_IN, [32, 32], seed=3)(x)
    b = random_encoder_features(N_IN, [32, 32], seed=3)(x)
    c = random_encoder_features(N_IN, [32, 32], seed=4)(x)
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


def test_subsample_deterministic_and_capped() -> None:
    a, b = subsample(1000, 100, 0, "x"), subsample(1000, 100, 0, "x")
    assert np.array_equal(a, b) and len(a) == 100 and len(set(a.tolist())) == 100
    assert np.all(np.diff(a) > 0)
    assert not np.array_equal(a, subsample(1000, 100, 1, "x"))
    assert np.array_equal(subsample(50, 100, 0, "x"), np.arange(50))


def test_params_validated_with_key() -> None:
    bad = params()
    bad["evaluate_transfer"]["max_train"] = 1
    with pytest.raises(ParamsError, match="evaluate_transfer.max_train"):
        TransferParams.from_params(bad)
    bad["evaluate_transfer"] = {**TRANSFER, "fashion": "yes"}
    with pytest.raises(ParamsError, match="evaluate_transfer.fashion"):
        TransferParams.from_params(bad)


def test_leakage_guard() -> None:
    learner = make_learner("finetune")
    learner.visible_classes = {0, 1, 2}
    check_unrevealed(learner, [7, 8])
    learner.visible_classes.add(8)
    with pytest.raises(LeakageError):
        check_unrevealed(learner, [7, 8])


def test_probe_does_not_touch_learners() -> None:
    dual, fine = make_learner("dualmem"), make_learner("finetune")
    dual.visible_classes = {0, 1}
    dual.observe(torch.rand(30, N_IN), torch.arange(30) % 2, np.arange(30))
    f_x, f_y = torch.rand(120, N_IN), torch.arange(120) % 3
    before = {learner.name: Snapshot(learner, f_x) for learner in (dual, fine)}
    target = transfer.make_target("novel", (f_x, f_y), (f_x, f_y), CFG, 0)
    out = probe_columns({"dualmem": dual.features, "finetune": fine.features}, [target], CFG)
    assert set(out["novel"]) == {"dualmem", "finetune"}
    for learner in (dual, fine):
        before[learner.name].assert_unchanged(learner, f_x)
    assert dual.known_classes() == {0, 1}


class FakeStream:
    """What run_transfer reads from a stream: 10 classes, K = 0..5, U = 6..9."""

    def __init__(self, seed: int) -> None:
        g = torch.Generator().manual_seed(seed)
        self.name, self.seed, self.n_tasks, self.held_out = "openworld", seed, 3, [6, 7, 8, 9]
        self.dataset = SimpleNamespace(n_features=N_IN, name="digits")
        self.x_train, self.y_train = torch.rand(500, N_IN, generator=g), torch.arange(500) % 10
        self.x_test, self.y_test = torch.rand(300, N_IN, generator=g), torch.arange(300) % 10

    def train_split(self, classes: list[int]):
        rows = torch.isin(self.y_train, torch.tensor(classes))
        return self.x_train[rows], self.y_train[rows]

    def test_split(self, classes: list[int]):
        rows = torch.isin(self.y_test, torch.tensor(classes))
        return self.x_test[rows], self.y_test[rows]


def patch_pipeline(monkeypatch: pytest.MonkeyPatch, visible: set[int]) -> list[object]:
    built: list[object] = []

    def build(params: dict, name: str, stream: FakeStream):
        built.append(make_learner(name, stream.seed))
        return built[-1]

    def load(learner, path):
        learner.visible_classes = set(visible)
        return {"params": 1, "param_bytes": 4, "items": 0, "item_bytes": 0}

    monkeypatch.setattr(transfer, "open_stream", lambda params, name, seed: FakeStream(seed))
    monkeypatch.setattr(runner, "build_learner", build)
    monkeypatch.setattr(runner, "load_learner_state", load)
    monkeypatch.setattr(transfer, "load_auxiliary", lambda name: None)
    return built


def run_all(p: dict, cfg: TransferParams) -> dict[str, Results]:
    """What the evaluate_transfer stages do: one run per learner and one for the random column."""
    return {name: run_transfer(p, name, cfg) for name in COLUMNS}


def test_run_transfer_results(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    built = patch_pipeline(monkeypatch, visible=set(range(6)))
    p = params()
    parts = run_all(p, TransferParams.from_params(p))
    assert len(built) == 2 * len(LEARNERS)  # every learner per seed; the random column builds none
    for name, part in parts.items():
        assert set(part.values["probe_novel"]) == {name}  # one column per run
    assert parts[transfer.RANDOM].memory == {} and set(parts["dualmem"].memory) == {"dualmem"}
    a = merge(list(parts.values()))
    b = merge(list(run_all(p, TransferParams.from_params(p)).values()))
    assert a.values == b.values  # deterministic
    assert set(a.values) == {"probe_novel"}
    assert set(a.values["probe_novel"]) == {"finetune", "joint", "dualmem", "random"}
    assert set(a.values["probe_novel"]["random"]) == {"0", "1"}
    assert [r.metric for r in a.rows] == ["probe_novel"]
    assert any("fashion" in note for note in a.extra["notes"])
    monkeypatch.chdir(tmp_path)
    for name, part in parts.items():
        part.save(name, {"seed": 0})
        assert results_path("transfer", name).exists() and metrics_path("transfer", name).exists()
    loaded = merge([Results.load(results_path("transfer", name)) for name in COLUMNS])
    assert loaded.values == a.values


def test_run_transfer_refuses_leaked_state(monkeypatch: pytest.MonkeyPatch) -> None:
    patch_pipeline(monkeypatch, visible={0, 1, 2, 3, 4, 5, 9})
    for name in LEARNERS:
        with pytest.raises(LeakageError):
            run_transfer(params(), name, CFG)


def test_child_runs_and_plots(monkeypatch: pytest.MonkeyPatch) -> None:
    patch_pipeline(monkeypatch, visible=set(range(6)))
    res = merge(list(run_all(params(), CFG).values()))
    runs = transfer.child_runs(res)
    assert len(runs) == 8 and all(set(m) == {"probe_novel"} for *_, m in runs)
    header, rows = transfer_tables(res)["transfer"]
    assert header == ["target", "learner", "accuracy"] and len(rows) == 4
    assert {(r[0], r[1]) for r in rows} == {("novel", c) for c in COLUMNS}
