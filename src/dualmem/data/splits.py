"""Per-seed split manifests: the class order, the tasks of each stream, and the held-out classes.

Two streams are defined for every seed:
- `continual`: all classes, split into tasks (Test 1);
- `openworld`: the known classes K only, split into tasks; the novel classes U are held out for
  Tests 2-5 and must never reach a learner, an encoder or a memory before their test.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from dualmem.core import paths
from dualmem.core.errors import DataError, ParamsError
from dualmem.core.params import Section

STREAMS = ("continual", "openworld")
STREAM_IDS = {name: i for i, name in enumerate(STREAMS)}


@dataclass(frozen=True)
class StreamSpec:
    tasks: list[list[int]]
    held_out: list[int]

    @property
    def classes(self) -> list[int]:
        return [c for task in self.tasks for c in task]


@dataclass(frozen=True)
class Manifest:
    seed: int
    dataset: str
    n_classes: int
    class_order: list[int]
    streams: dict[str, StreamSpec]

    def stream(self, name: str) -> StreamSpec:
        return self.streams[name]

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2)

    @classmethod
    def from_json(cls, text: str) -> Manifest:
        raw = json.loads(text)
        raw["streams"] = {k: StreamSpec(**v) for k, v in raw["streams"].items()}
        return cls(**raw)


@dataclass(frozen=True)
class ProtocolParams:
    class_order: str
    task_positions: list[list[int]]
    openworld_novel: int
    openworld_classes_per_task: int

    @classmethod
    def from_params(cls, params: dict, n_classes: int) -> ProtocolParams:
        section = Section.of(params, "protocol")
        order = section.choice("class_order", ["shuffled", "fixed"])
        tasks = validate_tasks(section.section("continual").raw("tasks"), "protocol.continual.tasks", n_classes)
        openworld = section.section("openworld")
        n_novel = openworld.integer("n_novel", minimum=1)
        per_task = openworld.integer("classes_per_task", minimum=1)
        n_known = n_classes - n_novel
        if n_known < 2 or n_known % per_task:
            raise ParamsError(
                "protocol.openworld.n_novel",
                f"leaves {n_known} known classes, which {per_task}-class tasks cannot partition",
                f"choose n_novel so that {n_classes} - n_novel is a multiple of classes_per_task",
            )
        return cls(order, tasks, n_novel, per_task)


def validate_tasks(tasks: object, key: str, n_classes: int) -> list[list[int]]:
    fix = f"list tasks that partition 0..{n_classes - 1}, e.g. [[0, 1], [2, 3], ...]"
    if not isinstance(tasks, list) or not tasks or not all(isinstance(t, list) and t for t in tasks):
        raise ParamsError(key, "must be a non-empty list of non-empty lists of class positions", fix)
    flat = [c for task in tasks for c in task]
    if any(isinstance(c, bool) or not isinstance(c, int) for c in flat):
        raise ParamsError(key, "holds a class position that is not an integer", fix)
    if sorted(flat) != list(range(n_classes)):
        raise ParamsError(key, f"does not partition the {n_classes} classes (each exactly once)", fix)
    return [list(t) for t in tasks]


def class_order(seed: int, n_classes: int, mode: str) -> list[int]:
    if mode == "fixed":
        return list(range(n_classes))
    return [int(c) for c in np.random.default_rng([seed, 0]).permutation(n_classes)]


def make_manifest(seed: int, dataset: str, n_classes: int, protocol: ProtocolParams) -> Manifest:
    order = class_order(seed, n_classes, protocol.class_order)
    continual = StreamSpec([[order[p] for p in task] for task in protocol.task_positions], held_out=[])
    shuffled = [int(c) for c in np.random.default_rng([seed, 1]).permutation(n_classes)]
    n_known = n_classes - protocol.openworld_novel
    known, novel = shuffled[:n_known], sorted(shuffled[n_known:])
    per = protocol.openworld_classes_per_task
    openworld = StreamSpec([known[i : i + per] for i in range(0, n_known, per)], held_out=novel)
    return Manifest(seed, dataset, n_classes, order, {"continual": continual, "openworld": openworld})


def write_manifest(manifest: Manifest, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(manifest.to_json())


def read_manifest(seed: int) -> Manifest:
    path = paths.manifest_path(seed)
    if not path.exists():
        raise DataError(f"split manifest {path} is missing; fix: run `dvc repro prepare` for seed {seed}")
    return Manifest.from_json(path.read_text())


def stream_seeds(params: dict, stream: str) -> list[int]:
    """Seeds a stream is run for: run.seeds (continual) or protocol.openworld.seeds (openworld)."""
    section = "run" if stream == "continual" else "protocol.openworld"
    return Section.of(params, section).int_list("seeds", minimum=0)
