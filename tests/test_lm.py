"""Test 6 (a byte-level LM fine-tuned domain after domain): corpora pinned and sliced, a causal model,
every learner's contract and the leakage rule (with a peeking learner as positive control), the metrics,
and bad input."""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from dualmem.core.errors import DataError, LeakageError, ParamsError
from dualmem.lm import corpora
from dualmem.lm.corpora import CorpusParams, cut_slices, read_source, strip_yaml_header
from dualmem.lm.evaluation import lm_metrics
from dualmem.lm.model import Adapters, ByteLM, ModelParams, window_losses
from dualmem.lm.pipeline import LMParams
from dualmem.lm.text_learner import Domain, TextContext, Training, available, parse_text_config, text_learner_class
from dualmem.tiny import project_root

from .test_leakage import state_tensors

TINY = yaml.safe_load((project_root() / "profiles" / "tiny.yaml").read_text())
MODEL = ModelParams(layers=1, width=16, heads=2, context=16)
TRAINING = Training(steps=6, batch_size=4, lr=0.003)


def synthetic_domains(seed: int = 0, noisy: list[int] = ()) -> list[Domain]:
    """Four domains, each a distinct repeating byte pattern (domain `i` in `noisy`: uniform noise)."""
    out = []
    for i in range(4):
        rng = np.random.default_rng([7, i])
        if i in noisy:
            data = rng.integers(0, 256, 3000)
        else:
            pattern = rng.integers(32 + 20 * i, 52 + 20 * i, 23)
            data = np.tile(pattern, 3000 // 23 + 1)[:3000]
        out.append(Domain(["prose", "legal", "medical", "code"][i], i, torch.from_numpy(data.astype(np.uint8)), seed))
    return out


def make(name: str, seed: int = 0, memory: int = 17 * 20):
    torch.manual_seed(0)
    base = ByteLM(MODEL).eval()
    return text_learner_class(name)(parse_text_config(TINY, name), TextContext(base, TRAINING, memory, seed))


def run(learner, domains: list[Domain], stages: int) -> None:
    learner.start(domains[0])
    for domain in domains[1 : stages + 1]:
        learner.learn_domain(domain)
        learner.sleep(domain)


def same(a, b) -> bool:
    ta, tb = state_tensors(a.state_dict()), state_tensors(b.state_dict())
    return len(ta) == len(tb) and all(torch.equal(x, y) for x, y in zip(ta, tb, strict=True))


# -- corpora ------------------------------------------------------------------------------------------
def test_licence_header_is_cut_and_slices_are_disjoint_and_fixed() -> None:
    assert strip_yaml_header("---\nkey: mit\n---\n\nPermission is hereby granted").strip() == \
        "Permission is hereby granted"
    text = bytes(np.random.default_rng(0).integers(0, 256, 40 * corpora.CHUNK).astype(np.uint8))
    sizes = {"train": 10 * corpora.CHUNK, "validation": 3 * corpora.CHUNK, "test": 3 * corpora.CHUNK}
    a, b = cut_slices(text, sizes, "legal"), cut_slices(text, sizes, "legal")
    assert all(np.array_equal(a[k], b[k]) for k in a) and all(len(a[k]) == sizes[k] for k in sizes)
    chunks = {k: {a[k][i : i + corpora.CHUNK].tobytes() for i in range(0, len(a[k]), corpora.CHUNK)} for k in a}
    assert not (chunks["train"] & chunks["test"]) and not (chunks["train"] & chunks["validation"])


def test_slices_that_do_not_fit_name_the_key() -> None:
    with pytest.raises(ParamsError, match="lm.slices"):
        cut_slices(b"x" * (5 * corpora.CHUNK), {"train": 4 * corpora.CHUNK, "validation": corpora.CHUNK,
                                                  "test": corpora.CHUNK}, "code")


def test_a_missing_or_altered_source_is_one_clear_error(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="legal.*missing.*make corpora"):
        read_source("legal", tmp_path)
    (tmp_path / corpora.SOURCES["code"].path).write_bytes(b"not the pinned wheel")
    with pytest.raises(DataError, match="sha256"):
        read_source("code", tmp_path)


@pytest.mark.skipif(not (project_root() / "data" / "sources" / corpora.SOURCES["medical"].path).exists(),
                    reason="the pinned wheels are not downloaded (make corpora)")
def test_the_pinned_sources_extract_to_their_recorded_text() -> None:
    for domain in ("legal", "medical", "code"):
        assert len(read_source(domain, project_root() / "data" / "sources")) > 1_000_000


# -- model --------------------------------------------------------------------------------------------
def test_the_model_is_causal_and_a_fresh_adapter_set_changes_nothing() -> None:
    torch.manual_seed(0)
    model = ByteLM(MODEL).eval()
    x = torch.randint(0, 256, (3, MODEL.context + 1), dtype=torch.uint8)
    y = x.clone()
    y[:, 10:] = 0
    with torch.no_grad():
        assert torch.allclose(window_losses(model, x)[:, :9], window_losses(model, y)[:, :9], atol=1e-6)
        assert torch.allclose(window_losses(model, x, Adapters(model, 2, 4.0)), window_losses(model, x))


# -- learners -----------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", available())
def test_scored_losses_do_not_depend_on_where_scoring_starts(name: str) -> None:
    """The evaluation asks only for the bytes after the warm-up (the kNN-LM then searches its store for
    those alone): they are the same bytes as when every position is asked for. Control: the dual memory's
    unscored positions do change (model only), so the skipping is real."""
    domains = synthetic_domains()
    learner = make(name)
    run(learner, domains, 2)
    windows = domains[2].windows(6, MODEL.context, torch.Generator().manual_seed(2))
    every, scored = learner.window_losses(windows), learner.window_losses(windows, 5)
    assert torch.equal(scored[:, 5:], every[:, 5:])
    if name == "dualmem":
        assert not torch.equal(scored[:, :5], every[:, :5])


@pytest.mark.parametrize("name", available())
def test_every_learner_is_deterministic_round_trips_and_keeps_its_budget(name: str) -> None:
    domains = synthetic_domains()
    a, b = make(name), make(name)
    run(a, domains, 2)
    run(b, domains, 2)
    assert same(a, b)
    windows = domains[1].windows(5, MODEL.context, torch.Generator().manual_seed(1))
    losses = a.window_losses(windows)
    assert losses.shape == (5, MODEL.context) and torch.isfinite(losses).all()
    c = make(name)
    c.load_state_dict(a.state_dict())
    assert torch.allclose(c.window_losses(windows), losses)
    cost = a.memory_cost()
    if not text_learner_class(name).upper_bound:
        assert cost["item_bytes"] <= 17 * 20


@pytest.mark.parametrize("name", available())
def test_no_learner_state_depends_on_a_domain_the_stream_has_not_reached(name: str) -> None:
    a, b = make(name), make(name)
    run(a, synthetic_domains(), 2)
    run(b, synthetic_domains(noisy=[3]), 2)
    assert same(a, b), f"{name}: its state after domain 2 depends on domain 3"


def test_the_comparison_catches_a_learner_that_peeks() -> None:
    """Positive control: one batch of the unreached domain, the guard bypassed, and the states differ."""
    learners = []
    for domains in (synthetic_domains(), synthetic_domains(noisy=[3])):
        learner = make("finetune")
        run(learner, domains, 1)
        learner.before_domain(domains[2])
        learner.seen.append(3)  # the peek
        learner.guarded_observe(domains[3].batch(0, 4, MODEL.context), 3)
        learners.append(learner)
    assert not same(*learners)


def test_observing_an_unreached_domain_raises() -> None:
    learner = make("replay")
    domains = synthetic_domains()
    run(learner, domains, 1)
    with pytest.raises(LeakageError):
        learner.guarded_observe(domains[3].batch(0, 4, MODEL.context), 3)


def test_finetune_forgets_the_general_domain_and_joint_forgets_less() -> None:
    domains = synthetic_domains()
    general = domains[0].windows(16, MODEL.context, torch.Generator().manual_seed(2))
    rises = {}
    for name in ("finetune", "joint"):
        learner = make(name)
        learner.ctx.training = Training(steps=60, batch_size=8, lr=0.01)
        learner.start(domains[0])
        before = float(learner.window_losses(general).mean())
        for domain in domains[1:]:
            learner.learn_domain(domain)
        rises[name] = float(learner.window_losses(general).mean()) - before
    assert rises["finetune"] > 0.5 and rises["joint"] < rises["finetune"]


# -- metrics and params -------------------------------------------------------------------------------
def test_metrics_of_a_known_matrix() -> None:
    R = np.array([[2.0, 4.0, 4.0], [2.5, 1.0, 4.0], [3.0, 1.5, 1.2]])
    m = lm_metrics(R)
    assert m["final_bpb"] == pytest.approx((3.0 + 1.5 + 1.2) / 3)
    assert m["forgetting_0"] == pytest.approx(1.0) and m["forgetting_1"] == pytest.approx(0.5)
    assert m["backward_transfer"] == pytest.approx((1.0 + 0.5) / 2)
    assert m["retention"] == pytest.approx((2.0 / 3.0 + 1.0 / 1.5) / 2)
    assert m["forward_transfer"] == pytest.approx(((4.0 - 4.0) + (4.0 - 4.0)) / 2)
    assert m["general_bpb_rise"] == pytest.approx(1.0)


@pytest.mark.parametrize(("key", "value", "named"), [
    ("domains", ["prose", "poetry"], "lm.domains"),
    ("eval", {"windows": 8, "warmup": 40}, "lm.eval.warmup"),
    ("learner_params.lora.select_bytes", 20, "lm.learner_params.lora.select_bytes"),
    ("slices.train", 10, "lm.slices.train"),
])
def test_bad_lm_params_name_the_key(key: str, value: object, named: str) -> None:
    params = copy.deepcopy(TINY)
    node = params["lm"]
    *parents, leaf = key.split(".")
    for part in parents:
        node = node[part]
    node[leaf] = value
    with pytest.raises(ParamsError, match=named.replace(".", r"\.")):
        LMParams.from_params(params)


def test_corpus_params_read_the_tiny_profile() -> None:
    cfg = CorpusParams.from_params(TINY)
    assert cfg.domains[0] == "prose" and set(cfg.sizes) == set(corpora.SLICES)
