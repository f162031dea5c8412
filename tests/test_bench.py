"""Nearest-neighbour backends and `make bench`'s pieces, on small sizes."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest

import dualmem.bench.memory as memory
import dualmem.knn_index as knn_index
from dualmem.bench import BenchConfig
from dualmem.bench.memory import memory_bench, pq_min_keys, probe_set, tune_nprobe
from dualmem.bench.report import bench_markdown
from dualmem.bench.stages import by_kind, by_learner, stage_records
from dualmem.core.errors import ParamsError
from dualmem.core.params import Section, load_params
from dualmem.encoders import new_encoder
from dualmem.knn_index import ExactIndex, IndexConfig, make_index
from dualmem.tiny import project_root


@pytest.fixture(autouse=True)
def one_thread():
    """FAISS at one thread: on a busy machine its OpenMP regions at more threads than free cores crawl."""
    try:
        import faiss  # noqa: F401
    except ImportError:
        yield
        return
    with memory.one_thread():
        yield


def unit_keys(n: int, dim: int, seed: int = 0) -> np.ndarray:
    x = np.random.default_rng(seed).normal(size=(n, dim)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def test_exact_index_grows_without_losing_keys():
    index = ExactIndex(8)
    keys = unit_keys(3000, 8)
    for start in range(0, 3000, 7):
        index.add(keys[start : start + 7])
    assert len(index) == 3000 and np.array_equal(index.keys.numpy(), keys)
    _, rows = index.search(keys[:50], 1)
    assert (rows[:, 0] == np.arange(50)).all()


def test_exact_search_in_blocks_matches_one_product(monkeypatch):
    keys, queries = unit_keys(5000, 16), unit_keys(300, 16, seed=1)
    index = ExactIndex(16, capacity=5000)
    index.add(keys)
    assert index.overhead_bytes() == 0  # the reserved room is used up
    whole_sims, whole_rows = index.search(queries, 5)
    monkeypatch.setattr(knn_index, "SEARCH_BLOCK", 300 * 700)  # blocks of 700 keys, the last one partial
    sims, rows = index.search(queries, 5)
    assert np.array_equal(rows, whole_rows) and np.allclose(sims, whole_sims)
    assert np.array_equal(rows[:, 0], (queries @ keys.T).argmax(1))


FAISS_KINDS = [("faiss_flat", 8), ("faiss_ivf", 8), ("faiss_ivfpq", 8), ("faiss_ivfpq", 4)]


@pytest.mark.parametrize(("backend", "pq_bits"), FAISS_KINDS)
def test_faiss_backends_find_stored_keys_and_count_their_bytes(backend, pq_bits):
    faiss = pytest.importorskip("faiss")
    keys = unit_keys(12_000, 32)
    cfg = IndexConfig(backend=backend, nlist=64, nprobe=64, pq_bytes=16, pq_bits=pq_bits, train_min=10_000)
    index = make_index(32, cfg)
    for start in range(0, len(keys), 4096):
        index.add(keys[start : start + 4096])
    assert len(index) == len(keys)
    sims, rows = index.search(keys[:200], 1)
    hit = (rows[:, 0] == np.arange(200)).mean()
    assert hit == 1.0 if backend != "faiss_ivfpq" else hit > 0.9
    assert np.allclose(sims[:, 0], 1.0, atol=1e-4 if backend != "faiss_ivfpq" else 0.1)  # cosine of unit keys
    # per item: the float32 vector (flat, IVF) or the 16-byte code (IVF-PQ), and the 8-byte id of IVF lists
    assert index.bytes_per_item() == {"faiss_flat": 128.0, "faiss_ivf": 136.0, "faiss_ivfpq": 24.0}[backend]
    # the whole index is what FAISS writes out: every stored byte counted, none twice (header aside;
    # precomputed tables are rebuilt on load, not written)
    counted = len(index) * index.bytes_per_item() + index.overhead_bytes() - index.precomputed_table_bytes()
    serialised = len(faiss.serialize_index(index.index))
    assert 0 <= serialised - counted <= 1024 + 24 * cfg.nlist
    if pq_bits == 4 and backend == "faiss_ivfpq":
        assert 0 < index.padding_bytes() < cfg.nlist * 32 * index.code_bytes()  # partial last blocks
    if backend == "faiss_ivfpq" and pq_bits == 8:
        assert index.precomputed_table_bytes() == 4 * cfg.nlist * cfg.pq_m * 256


def test_ivf_quantisers_train_on_written_keys_only():
    """Centroids come from the first `train_min` keys written: neither later keys nor the queries that
    trigger training move them. (An index that trained on probes, or on all keys, would fail this.)"""
    pytest.importorskip("faiss")
    written = unit_keys(2000, 16)
    cfg = IndexConfig(backend="faiss_ivfpq", nlist=16, nprobe=4, pq_bytes=4, train_min=1500)

    def centroids(index) -> np.ndarray:
        return index.quantiser.reconstruct_n(0, index.quantiser.ntotal)

    streamed = make_index(16, cfg)
    streamed.add(written[:1000])
    assert not streamed.index.is_trained and streamed.overhead_bytes() >= 1000 * 16 * 4  # waiting keys count
    streamed.add(written[1000:])  # 2,000 >= train_min: trains on these 2,000 written keys
    queried = make_index(16, cfg)
    queried.add(written[:1000])
    queried.add(written[1000:])
    queried.add(unit_keys(500, 16, seed=5))  # later writes
    queried.search(unit_keys(3000, 16, seed=9), 1)  # many queries
    assert np.array_equal(centroids(streamed), centroids(queried))
    early = make_index(16, replace_cfg(cfg, train_min=10_000))
    early.add(written)
    early.search(unit_keys(3000, 16, seed=9), 1)  # training triggered by a query: still on the written keys
    assert np.array_equal(centroids(early), centroids(streamed))


def replace_cfg(cfg: IndexConfig, **changes) -> IndexConfig:
    from dataclasses import replace

    return replace(cfg, **changes)


def test_index_config_from_section_names_the_bad_key():
    def parse(data: dict, **kw) -> IndexConfig:
        return IndexConfig.from_section(Section(data, "episodic.index"), **kw)

    cfg = parse({"backend": "faiss_ivfpq", "nlist": 256, "nprobe": 32}, dim=400)
    assert (cfg.backend, cfg.nlist, cfg.nprobe, cfg.pq_bytes, cfg.pq_bits, cfg.pq_m) == \
        ("faiss_ivfpq", 256, 32, 25, 4, 50)
    assert parse({"pq_bits": 8, "pq_bytes": 50}, dim=400, backend="faiss_ivf").backend == "faiss_ivf"
    cases = [({"pq_bytes": 24}, "'episodic.index.pq_bytes'", "does not divide the key dimension 400"),
             ({"pq_bits": 6}, "'episodic.index.pq_bits'", "not one of [4, 8]"),
             ({"nlist": 64, "nprobe": 128}, "'episodic.index.nprobe'", "more than the nlist = 64"),
             ({"nprob": 3}, "'episodic.index.nprob'", "did you mean 'episodic.index.nprobe'"),
             ({"backend": "hnsw"}, "'episodic.index.backend'", "not one of"),
             ({"nlist": "many"}, "'episodic.index.nlist'", "must be an integer"),
             ({"train_min": 0}, "'episodic.index.train_min'", "must be >= 1")]
    for data, key, problem in cases:
        with pytest.raises(ParamsError, match=re.escape(problem)) as exc:
            parse(data, dim=400)
        assert key in str(exc.value)
    with pytest.raises(ParamsError, match="'bench.index.backend' is not read here"):
        IndexConfig.from_section(Section({"backend": "exact"}, "bench.index"), dim=400, backend="exact")
    with pytest.raises(ValueError, match="IndexConfig.pq_bytes"):
        make_index(400, IndexConfig(backend="faiss_ivfpq", pq_bytes=24))


def test_bench_config_reads_the_index_settings_of_params_yaml():
    params = load_params(project_root() / "params.yaml")
    cfg = BenchConfig.from_params(params)
    assert isinstance(cfg.index, IndexConfig)
    assert {k: getattr(cfg.index, k) for k in params["bench"]["index"]} == params["bench"]["index"]
    assert cfg.index.problems(params["encoder"]["hidden"][-1], every_backend=True) == []


def test_validation_probes_are_other_items_than_the_report_probes():
    encoder = new_encoder(784, [32], "bench", 0)
    report_ids, report_keys = probe_set(encoder, 5000, 300, 0.1, 0.1, 0)
    val_ids, val_keys = probe_set(encoder, 5000, 300, 0.1, 0.1, 0, purpose="validation")
    again_ids, again_keys = probe_set(encoder, 5000, 300, 0.1, 0.1, 0)
    assert np.array_equal(report_ids, again_ids) and np.array_equal(report_keys, again_keys)  # seeded
    assert len(np.intersect1d(report_ids, val_ids)) == 0 and len(val_ids) == 300


def test_memory_bench_compares_backends_on_the_same_keys():
    pytest.importorskip("faiss")
    cfg = IndexConfig(nlist=16, nprobe=16, pq_bytes=8, train_min=500)
    assert pq_min_keys(cfg) == 16 * 39 and pq_min_keys(replace_cfg(cfg, pq_bits=8)) == 256 * 39
    rows = memory_bench([32], 784, [500, 2000], ["exact", "faiss_flat", "faiss_ivf", "faiss_ivfpq"], cfg, 100, 0.1,
                        0.1, progress=False)
    assert [(r.backend, r.n) for r in rows] == [("exact", 500), ("faiss_flat", 500), ("faiss_ivf", 500),
                                                ("exact", 2000), ("faiss_flat", 2000), ("faiss_ivf", 2000),
                                                ("faiss_ivfpq", 2000)]  # 4-bit IVF-PQ needs 624 keys
    by = {(r.backend, r.n): r for r in rows}
    assert by[("exact", 2000)].recall == by[("faiss_flat", 2000)].recall  # the same exact search
    # nprobe = nlist scans every list: L2 on unit keys ranks as the inner product does
    assert by[("faiss_ivf", 2000)].recall == by[("exact", 2000)].recall
    assert by[("faiss_ivfpq", 2000)].bytes_per_item == 16.0  # 8 code bytes + 8 id bytes
    assert all(r.query_p50_ms_b1 > 0 and r.write_p50_ms_b1024 > 0 for r in rows)


def test_tune_nprobe_reads_validation_probes_only(monkeypatch):
    pytest.importorskip("faiss")
    purposes = []

    def spy(*args, **kwargs):
        purposes.append(kwargs.get("purpose", "report"))
        return probe_set(*args, **kwargs)

    monkeypatch.setattr(memory, "probe_set", spy)
    rows = tune_nprobe([32], 784, 3000, "faiss_ivf", IndexConfig(nlist=16, nprobe=1, train_min=1000), [1, 4, 16],
                       200, 0.1, 0.1, progress=False)
    assert purposes == ["validation"]
    assert [r.nprobe for r in rows] == [1, 4, 16] and rows[0].recall <= rows[-1].recall
    assert rows[-1].recall == rows[-1].exact_recall  # every list searched: exact
    with pytest.raises(ValueError, match="IVF backend"):
        tune_nprobe([32], 784, 3000, "exact", IndexConfig(), [1], 10, 0.1, 0.1, progress=False)


def test_stage_records_and_bench_report(tmp_path):
    folder = tmp_path / ".dualmem" / "stages"
    folder.mkdir(parents=True)
    for i, (stage, seconds) in enumerate([("prepare", 5.0), ("sequential@er-continual", 100.0),
                                          ("sequential@finetune-openworld", 20.0), ("evaluate_recall@er", 30.0)]):
        (folder / f"{stage}.json").write_text(json.dumps({
            "stage": stage, "status": "finished", "wall_seconds": seconds, "peak_rss_mb": 500.0 + i,
            "finished_at": f"2026-01-01T00:00:0{i}"}))
    records = stage_records(tmp_path)
    assert [r.stage for r in records][0] == "prepare"
    assert by_kind(records)["sequential"] == (2, 120.0, 502.0)
    assert by_learner(records) == {"er": 130.0, "finetune": 20.0}
    md = bench_markdown({"stages": [vars(r) for r in records], "reference_stages": [], "pq_min_keys": 9984,
                         "throughput": [], "memory": []})
    assert "2.6 min" in md and "Not measured yet (`make reference`)" in md and "| sequential | 2 | 120.0 |" in md


def stage_record(stage: str, finished_at: str, seconds: float = 1.0) -> dict:
    return {"stage": stage, "status": "finished", "wall_seconds": seconds, "peak_rss_mb": 100.0,
            "finished_at": finished_at}


def test_a_part_not_measured_here_is_kept_with_the_stamp_of_its_measurement():
    from dualmem.bench.__main__ import carry_over

    config = {"probes": 1000}
    previous = {"config": config, "measured": {"throughput": "old machine, 2026-11-30", "memory": "old, 2026-11-30",
                                              "stages": "old, 2026-11-30"},
                "throughput": [{"learner": "er"}], "memory": [{"backend": "exact"}],
                "stages": [stage_record("prepare", "2026-11-30T01"), stage_record("report", "2026-11-30T02")],
                "reference_stages": [stage_record("prepare", "2026-11-30T03")]}
    out = carry_over({"config": config, "measured": {"memory": "new machine, 2026-12-07", "stages": "new machine"},
                      "memory": [{"backend": "x"}],
                      "stages": [stage_record("prepare", "2026-12-07T01", 9.0)], "reference_stages": []}, previous)
    assert out["throughput"] == previous["throughput"]  # skipped: kept whole, with its own stamp
    assert out["measured"]["throughput"] == "old machine, 2026-11-30"
    assert out["memory"] == [{"backend": "x"}] and out["measured"]["memory"] == "new machine, 2026-12-07"
    assert [(r["stage"], r["wall_seconds"]) for r in out["stages"]] == [("report", 1.0), ("prepare", 9.0)]
    assert "the 1 stage(s) run here" in out["measured"]["stages"] and "old, 2026-11-30" in out["measured"]["stages"]
    assert out["reference_stages"] == previous["reference_stages"]  # not run here: the last run kept whole
    rerun = carry_over({"config": config, "measured": {}, "stages": [],
                        "reference_stages": [stage_record("train_encoder", "2026-12-07T02")]}, previous)
    assert [r["stage"] for r in rerun["reference_stages"]] == ["train_encoder"]  # never mixed with the old run
    other = carry_over({"config": {"probes": 10}, "measured": {}, "stages": [], "reference_stages": []}, previous)
    assert "memory" not in other  # measured with other settings: not carried as this configuration's figures
    md = bench_markdown({**out, "pq_min_keys": 9984, "memory": [], "throughput": []})
    assert "Measured on: old machine, 2026-11-30." in md
