"""Nearest-neighbour backends and `make bench`'s pieces, on small sizes."""

from __future__ import annotations

import json

import numpy as np
import pytest

from dualmem.bench.memory import memory_bench
from dualmem.bench.report import bench_markdown
from dualmem.bench.stages import by_kind, by_learner, stage_records
from dualmem.knn_index import ExactIndex, IndexConfig, make_index


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


@pytest.mark.parametrize("backend", ["faiss_flat", "faiss_ivf", "faiss_ivfpq"])
def test_faiss_backends_find_stored_keys(backend):
    pytest.importorskip("faiss")
    keys = unit_keys(12_000, 32)
    cfg = IndexConfig(backend=backend, nlist=64, nprobe=64, pq_bytes=16, train_min=10_000)
    index = make_index(32, cfg)
    for start in range(0, len(keys), 4096):
        index.add(keys[start : start + 4096])
    assert len(index) == len(keys)
    _, rows = index.search(keys[:200], 1)
    hit = (rows[:, 0] == np.arange(200)).mean()
    assert hit == 1.0 if backend != "faiss_ivfpq" else hit > 0.9
    assert index.bytes_per_item() == {"faiss_flat": 128.0, "faiss_ivf": 136.0, "faiss_ivfpq": 24.0}[backend]


def test_memory_bench_compares_backends_on_the_same_keys():
    pytest.importorskip("faiss")
    rows = memory_bench([32], 784, [500, 2000], ["exact", "faiss_flat", "faiss_ivfpq"],
                        IndexConfig(nlist=16, nprobe=16, pq_bytes=8, train_min=500), 100, 0.1, 0.1, progress=False)
    assert [(r.backend, r.n) for r in rows] == [("exact", 500), ("faiss_flat", 500), ("exact", 2000),
                                                ("faiss_flat", 2000)]  # IVF-PQ needs 9,984 keys
    by = {(r.backend, r.n): r for r in rows}
    assert by[("exact", 2000)].recall == by[("faiss_flat", 2000)].recall  # the same exact search
    assert all(r.query_p50_ms_b1 > 0 and r.write_p50_ms_b1024 > 0 for r in rows)


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
