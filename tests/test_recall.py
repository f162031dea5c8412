"""Test 5 (long-horizon recall): perfect memory, chance guesser, corruption, prefix readout, and
no mutation of the post-stream learners."""

from __future__ import annotations

import copy
from dataclasses import replace
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from dualmem import runner
from dualmem.core.errors import LeakageError, ParamsError
from dualmem.core.params import Section
from dualmem.core.results import TestResults as Results  # not `Test*`: pytest would collect it
from dualmem.core.results import merge, results_path
from dualmem.core.seeding import seeded_generator
from dualmem.encoders import ENCODE_BATCH, Encoder, new_encoder
from dualmem.evals import recall
from dualmem.evals.recall import age_curve, run_recall
from dualmem.evals.recall_memory import LazyFeatures, knn_recall, prefix_knn_predictions
from dualmem.evals.recall_networks import offline_recall, online_recall
from dualmem.evals.recall_protocol import RecallParams, corrupt, make_recall_stream
from dualmem.learners import Learner, LearnerContext, learner_class
from dualmem.memory.episodic import EpisodicMemory
from dualmem.plot_data import recall_tables

from .conftest import SMALL_LEARNERS
from .test_fewshot import Snapshot

N_IN = 64
LEARNERS = SMALL_LEARNERS
RECALL = {"sizes": [50, 200, 400], "n_targets": 8, "noise_std": 0.1, "dropout": 0.1, "k": 1,
          "candidates": 16, "age_bins": 4, "query_batch": 128,
          "online": {"batch_size": 10, "lr": 0.001},
          "offline": {"epochs": 2, "batch_size": 64, "min_steps": 20, "lr": 0.001}}
CFG = RecallParams.from_params({"evaluate_recall": RECALL})


def make_learner(name: str, seed: int = 0, encoder: Encoder | None = None, train_x: torch.Tensor | None = None,
                 budget_bytes: int | None = None):
    encoder = new_encoder(N_IN, [32, 32], "test", seed) if encoder is None else encoder
    train_x = torch.rand(50, N_IN) if train_x is None else train_x
    cls = learner_class(name)
    cfg = cls.parse(Section.of({"learners": LEARNERS}, f"learners.{name}"))
    return cls(cfg, LearnerContext(encoder, 10, seed, train_x, budget_bytes))


def identity_encoder(dim: int) -> Encoder:
    enc = Encoder(dim, [dim])
    with torch.no_grad():
        enc.net[0].weight.copy_(torch.eye(dim))
        enc.net[0].bias.zero_()
    return enc.eval()


def test_perfect_memory_recalls_everything() -> None:
    n = 300
    cues = torch.eye(n)  # distinct one-hot cues: a perfect memory solves the stream
    for candidates in (0, 16):
        cfg = replace(CFG, sizes=[30, 100, n], noise_std=0.0, dropout=0.0, candidates=candidates)
        rs = make_recall_stream(cues, cfg, seed=0)
        out = knn_recall(identity_encoder(n).encode, rs, cfg, temperature=0.05)
        assert out.recall == {30: 1.0, 100: 1.0, n: 1.0}
        assert out.correct.all() and out.bytes_per_item == n * 4 + 8


def test_heavy_corruption_hurts_recall() -> None:
    cfg = replace(CFG, sizes=[300], noise_std=0.0, dropout=1.0)  # every pixel dropped
    rs = make_recall_stream(torch.eye(300), cfg, seed=0)
    assert knn_recall(identity_encoder(300).encode, rs, cfg, temperature=0.05).recall[300] < 0.5


@pytest.mark.parametrize("k", [1, 3])
@pytest.mark.parametrize("candidates", [0, 16])
def test_prefix_readout_equals_fresh_memories(k: int, candidates: int) -> None:
    g = torch.Generator().manual_seed(0)
    keys, queries = torch.randn(600, 24, generator=g), torch.randn(600, 24, generator=g)
    labels = torch.randint(0, 8, (600,), generator=g)
    full = EpisodicMemory(24, 8, k=k, temperature=0.1)
    full.write(keys, labels)
    sizes = [50, 200, 600]
    preds = prefix_knn_predictions(full, LazyFeatures(lambda x: x, queries), sizes, candidates, chunk=128)
    for n in sizes:
        fresh = EpisodicMemory(24, 8, k=k, temperature=0.1)
        fresh.write(keys[:n], labels[:n])
        assert torch.equal(preds[n], fresh.read(queries[:n]).probs.argmax(1)), n


def test_lazy_features_are_the_blocks_of_one_call_and_hold_one_block() -> None:
    """Test 5 reads query features a slice at a time: each slice must be the same numbers as the slice of
    one call on every row (encoders work ENCODE_BATCH rows per pass), and only one block is kept."""
    encoder = new_encoder(N_IN, [16], 0)
    x = torch.rand(2 * ENCODE_BATCH + 300, N_IN, generator=torch.Generator().manual_seed(1))
    whole, lazy = encoder.encode(x), LazyFeatures(encoder.encode, x)
    for start, stop in [(0, 100), (ENCODE_BATCH - 50, ENCODE_BATCH + 50), (100, 2 * ENCODE_BATCH + 300),
                        (2 * ENCODE_BATCH, 2 * ENCODE_BATCH + 999)]:
        assert torch.equal(lazy.rows(start, stop), whole[start:stop]), (start, stop)
        assert lazy.cached is not None and len(lazy.cached[1]) <= ENCODE_BATCH

    def centred(rows: torch.Tensor) -> torch.Tensor:  # control: a statistic over all the rows it is given
        return rows - rows.mean(0)

    assert not torch.equal(LazyFeatures(centred, x).rows(0, 100), centred(x)[:100])


def test_untrained_guesser_near_chance() -> None:
    x = torch.rand(2000, N_IN, generator=torch.Generator().manual_seed(1))
    cfg = replace(CFG, sizes=[2000], online_lr=0.0, offline_lr=0.0)
    rs = make_recall_stream(x, cfg, seed=0)
    enc = new_encoder(N_IN, [32, 32], "test", 0)
    for fn in (online_recall, offline_recall):
        assert 0.09 <= fn(enc, rs, cfg).recall[2000] <= 0.16


def test_corruption_deterministic_and_effective() -> None:
    x = torch.rand(200, N_IN, generator=torch.Generator().manual_seed(2))
    a = corrupt(x, 0.1, 0.25, seeded_generator("c", 0))
    b = corrupt(x, 0.1, 0.25, seeded_generator("c", 0))
    c = corrupt(x, 0.1, 0.25, seeded_generator("c", 1))
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert a.min() >= 0 and a.max() <= 1
    assert (a != x).float().mean() > 0.5
    assert 0.2 < (a == 0).float().mean() < 0.3


def test_stream_deterministic_distinct_and_capped() -> None:
    x = torch.rand(300, N_IN, generator=torch.Generator().manual_seed(3))
    notes: list[str] = []
    a, b = make_recall_stream(x, CFG, 5, notes), make_recall_stream(x, CFG, 5)
    assert a.sizes == [50, 200, 300] and any("capped" in n for n in notes)
    assert np.array_equal(a.ids, b.ids) and torch.equal(a.queries, b.queries)
    assert torch.equal(a.targets, b.targets) and len(set(a.ids.tolist())) == 300
    assert not np.array_equal(a.ids, make_recall_stream(x, CFG, 6).ids)
    assert set(a.targets.tolist()) == set(range(8))


def test_age_curve_youngest_first() -> None:
    lows, values = age_curve(np.array([False] * 50 + [True] * 50), 2)
    assert lows == [0, 50] and values == [1.0, 0.0]


def test_params_validated_with_key() -> None:
    bad = copy.deepcopy(RECALL)
    bad["dropout"] = 1.5
    with pytest.raises(ParamsError, match="evaluate_recall.dropout"):
        RecallParams.from_params({"evaluate_recall": bad})
    bad = copy.deepcopy(RECALL)
    bad["online"]["batch_size"] = 0
    with pytest.raises(ParamsError, match="evaluate_recall.online.batch_size"):
        RecallParams.from_params({"evaluate_recall": bad})


def test_learners_untouched_and_deterministic() -> None:
    x = torch.rand(400, N_IN, generator=torch.Generator().manual_seed(4))
    rs = make_recall_stream(x, CFG, seed=0)
    for name in LEARNERS:
        learner = make_learner(name)
        learner.visible_classes = {0, 1}
        if name == "dualmem":  # a memory with items in it: recall must use a fresh one
            learner.observe(x[:20], torch.arange(20) % 2, np.arange(20))
        before = Snapshot(learner, x[:50])
        first = learner.recall(rs, CFG)
        before.assert_unchanged(learner, x[:50])
        assert learner.known_classes() == {0, 1}
        assert learner.recall(rs, CFG).recall == first.recall


def test_run_recall_results(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    x = torch.rand(350, N_IN, generator=torch.Generator().manual_seed(5))
    stream = SimpleNamespace(name="openworld", seed=0, x_train=x, n_tasks=3, held_out=[6, 7, 8, 9])
    monkeypatch.setattr(recall, "open_stream", lambda params, name, seed: stream)
    monkeypatch.setattr(runner, "build_learner", lambda params, name, s: make_learner(name))
    monkeypatch.setattr(runner, "load_learner_state", lambda learner, path: {"params": 1})
    p = {"run": {"learners": list(LEARNERS)}, "protocol": {"openworld": {"seeds": [0, 1]}}}
    parts = {name: run_recall(p, name, CFG) for name in LEARNERS}
    for name, part in parts.items():
        assert set(part.values["recall_50"]) == {name}  # one learner per run
    res = merge(list(parts.values()))
    assert set(res.values["recall_50"]) == set(LEARNERS)
    assert res.extra["sizes"] == [50, 200, 350]
    # random 64-d inputs through a random encoder are hard to tell apart; memory still beats chance
    at_max = res.values["recall_350"]
    assert at_max["dualmem"]["0"] > max(0.3, at_max["finetune"]["0"])
    assert len(res.extra["recall_vs_age"]["finetune"]) == CFG.age_bins
    assert [r.metric for r in res.rows if r.in_table] == ["recall_350", "bytes_per_item"]
    runs = recall.child_runs(res)
    assert len(runs) == 6 and all(len(series) == 3 for *_, series in runs)
    monkeypatch.chdir(tmp_path)
    for name, part in parts.items():
        part.save(name, {"seed": 0})
    loaded = merge([Results.load(results_path("recall", name)) for name in LEARNERS])
    assert loaded.values == res.values and loaded.extra["sizes"] == res.extra["sizes"]
    assert (tmp_path / "metrics" / "recall" / "dualmem.json").exists()
    header, rows = recall_tables(loaded)["recall_by_n"]
    assert header == ["n", *LEARNERS] and [r[0] for r in rows] == [50, 200, 350]
    assert all(len(r) == 1 + len(LEARNERS) for r in rows)
    age_header, age_rows = recall_tables(loaded)["recall_by_age"]
    assert age_header == ["age", *LEARNERS] and len(age_rows) == CFG.age_bins


def test_run_recall_refuses_leaked_state(monkeypatch: pytest.MonkeyPatch) -> None:
    x = torch.rand(100, N_IN, generator=torch.Generator().manual_seed(6))
    stream = SimpleNamespace(name="openworld", seed=0, x_train=x, n_tasks=3, held_out=[6, 7, 8, 9])

    def leaked(learner, path):
        learner.visible_classes = {0, 1, 9}
        return {"params": 1}

    monkeypatch.setattr(recall, "open_stream", lambda params, name, seed: stream)
    monkeypatch.setattr(runner, "build_learner", lambda params, name, s: make_learner(name))
    monkeypatch.setattr(runner, "load_learner_state", leaked)
    p = {"run": {"learners": list(LEARNERS)}, "protocol": {"openworld": {"seeds": [0]}}}
    with pytest.raises(LeakageError):
        run_recall(p, "finetune", replace(CFG, sizes=[50]))


def test_budgeted_memory_forgets_evicted_items() -> None:
    cfg = replace(CFG, sizes=[50, 200], noise_std=0.0, dropout=0.0)
    rs = make_recall_stream(torch.eye(200), cfg, seed=0)
    out = knn_recall(identity_encoder(200).encode, rs, cfg, budget=100, temperature=0.05)
    assert out.recall[50] == 1.0 and out.recall[200] < 0.8


def naive_class_balanced_fifo(labels: np.ndarray, budget: int) -> np.ndarray:
    """The eviction rule item by item: the largest class (lowest label on a tie) loses its oldest."""
    keep = np.ones(len(labels), dtype=bool)
    while keep.sum() > budget:
        victim = int(np.argmax(np.bincount(labels[keep])))
        keep[np.flatnonzero(keep & (labels == victim))[0]] = False
    return keep


@pytest.mark.parametrize("seed", range(20))
def test_a_budgeted_write_keeps_what_evicting_one_item_at_a_time_keeps(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n_classes, budget = int(rng.integers(2, 6)), int(rng.integers(1, 30))
    memory = EpisodicMemory(4, n_classes, k=1, temperature=0.1, budget=budget)
    all_labels, all_keys = [], []
    for _ in range(3):
        n = int(rng.integers(0, 40))
        labels, feats = torch.from_numpy(rng.integers(0, n_classes, n)), torch.randn(n, 4)
        memory.write(feats, labels)
        all_labels.append(labels.numpy())
        all_keys.append(torch.nn.functional.normalize(feats, dim=1))
        labels_so_far = np.concatenate(all_labels)
        kept = np.flatnonzero(naive_class_balanced_fifo(labels_so_far, budget))
        # the memory after each write holds what the naive rule keeps of everything written so far
        assert memory.written_at.tolist() == list(kept)
        assert torch.equal(memory.keys, torch.cat(all_keys)[torch.from_numpy(kept)])


def test_recall_respects_the_memory_budget() -> None:
    """The one memory budget (memory.budget_bytes) bounds what a storing learner keeps for recall."""
    cfg = replace(CFG, sizes=[50, 200], noise_std=0.0, dropout=0.0)
    x = torch.eye(200)
    rs = make_recall_stream(x, cfg, seed=0)
    item_bytes = 200 * 4 + 8  # a float32 feature and an int64 label
    unbounded = make_learner("dualmem", encoder=identity_encoder(200), train_x=x)
    assert unbounded.recall(rs, cfg).recall == {50: 1.0, 200: 1.0}
    bounded = make_learner("dualmem", encoder=identity_encoder(200), train_x=x, budget_bytes=100 * item_bytes + 7)
    out = bounded.recall(rs, cfg)
    assert out.recall[50] == 1.0 and out.recall[200] < 0.8
    assert out.bytes_per_item == item_bytes


class FeaturesOnly(Learner):
    """A learner with only the two required capabilities: every other rule is the shared default."""

    name = "features_only"

    def observe(self, x: torch.Tensor, y: torch.Tensor, ids: np.ndarray) -> None:
        pass

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return x.float()

    def proba_from_features(self, feats: torch.Tensor) -> torch.Tensor:
        return torch.full((len(feats), self.ctx.n_classes), 1.0 / self.ctx.n_classes)

    def memory_cost(self) -> dict[str, int]:
        return {"params": 0, "param_bytes": 0, "items": 0, "item_bytes": 0}


def test_default_recall_rule_is_a_budgeted_episodic_memory() -> None:
    cfg = replace(CFG, sizes=[50, 200], noise_std=0.0, dropout=0.0, k=3)
    x = torch.eye(200)
    rs = make_recall_stream(x, cfg, seed=0)
    unbounded = FeaturesOnly(None, LearnerContext(Encoder(200, []), 10, 0, x))
    assert unbounded.recall(rs, cfg).recall == {50: 1.0, 200: 1.0}
    bounded = FeaturesOnly(None, LearnerContext(Encoder(200, []), 10, 0, x, 100 * (200 * 4 + 8)))
    out = bounded.recall(rs, cfg)
    assert out.recall[50] == 1.0 and out.recall[200] < 0.8
