"""`make bench` (`python -m dualmem.bench`): reports/bench.md — learner throughput against a bare loop,
stage wall times and peak memory of the last `dvc repro`, episodic-memory backends from 10^3 to 10^6
items. Its settings are the `bench` section of params.yaml (`BenchConfig`)."""

from __future__ import annotations

from dataclasses import dataclass

from dualmem.errors import ParamsError
from dualmem.knn_index import BACKENDS
from dualmem.params import Section, param, parse_config


@dataclass(frozen=True)
class IndexSettings:
    nlist: int = param(minimum=1)  # IVF buckets, capped at N / 39
    nprobe: int = param(minimum=1)  # buckets searched per query
    pq_bytes: int = param(minimum=1)  # IVF-PQ code bytes per key (divides the key dimension)
    train_min: int = param(minimum=1)  # keys the IVF quantisers train on (the first written)


@dataclass(frozen=True)
class BenchConfig:
    memory_sizes: list[int]
    backends: list[str]
    probes: int  # corrupted stored items queried per N for recall
    index: IndexSettings
    throughput_tasks: int  # tasks of the continual stream each learner learns

    @classmethod
    def from_params(cls, params: dict) -> BenchConfig:
        s = Section.of(params, "bench")
        index = parse_config(IndexSettings, s.section("index"))
        key_dim = Section.of(params, "encoder").int_list("hidden", minimum=1, unique=False)[-1]
        if key_dim % index.pq_bytes:
            raise ParamsError("bench.index.pq_bytes", f"is {index.pq_bytes}, which does not divide the key "
                              f"dimension {key_dim} (encoder.hidden[-1])", f"use a divisor of {key_dim}")
        return cls(sorted(s.int_list("memory_sizes", minimum=1)), s.names("backends", BACKENDS),
                   s.integer("probes", minimum=1), index, s.integer("throughput_tasks", minimum=1))
