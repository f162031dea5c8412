"""`make bench` (`python -m dualmem.bench`): reports/bench.md — learner throughput against a bare loop,
stage wall times and peak memory of the last `dvc repro`, episodic-memory backends from 10^3 to 10^6
items. Its settings are the `bench` section of params.yaml (`BenchConfig`)."""

from __future__ import annotations

from dataclasses import dataclass

from dualmem.core.params import Section
from dualmem.knn_index import BACKENDS, IndexConfig


@dataclass(frozen=True)
class BenchConfig:
    memory_sizes: list[int]
    backends: list[str]
    probes: int  # corrupted stored items queried per N for recall
    index: IndexConfig  # IVF settings of the FAISS backends (`backend` is each row's, from `backends`)
    throughput_tasks: int  # tasks of the continual stream each learner learns

    @classmethod
    def from_params(cls, params: dict) -> BenchConfig:
        s = Section.of(params, "bench")
        key_dim = Section.of(params, "encoder").int_list("hidden", minimum=1, unique=False)[-1]
        index = IndexConfig.from_section(s.section("index"), dim=key_dim, backend="exact")
        return cls(sorted(s.int_list("memory_sizes", minimum=1)), s.names("backends", BACKENDS),
                   s.integer("probes", minimum=1), index, s.integer("throughput_tasks", minimum=1))
