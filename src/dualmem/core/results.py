"""The one format every evaluate stage writes and the report reads.

An evaluate stage (one per test and learner) collects per-(metric, learner, seed) values in a
`TestResults` and saves, for its learner (or reference column) `<name>`:
- `metrics/<test>/<name>.json`: aggregates per metric (mean, std, sem, ci95, n) — the DVC metric that
  `dvc metrics show` / `dvc exp show` display;
- `results/<test>/<name>.json`: every per-seed value plus the row definitions. The report merges a
  test's files (`merge`) and turns them into table rows with paired gaps.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from dualmem.core.params import params_hash
from dualmem.core.paths import METRICS_DIR, RESULTS_DIR
from dualmem.core.stats import summarize


@dataclass
class Row:
    """One report row: a metric of a test, with the published snapshot values as reference."""

    test: str  # e.g. "1 Continual (Split, class-incremental)"
    metric: str  # key in per-seed values, e.g. "retention"
    label: str  # human label, e.g. "Retention"
    higher_is_better: bool = True
    reference: dict[str, str] = field(default_factory=dict)  # learner -> published value
    in_table: bool = True


@dataclass
class TestResults:
    test: str  # file stem, e.g. "continual"
    protocol: str  # one line describing the protocol, shown under the table
    rows: list[Row] = field(default_factory=list)
    values: dict[str, dict[str, dict[str, float]]] = field(default_factory=dict)  # metric->learner->seed
    memory: dict[str, dict[str, int]] = field(default_factory=dict)  # learner -> memory cost
    extra: dict[str, Any] = field(default_factory=dict)  # per-test detail (curves, matrices)
    params_hash: str = ""  # of the params.yaml that produced it (see `save`)

    def add(self, metric: str, learner: str, seed: int, value: float) -> None:
        self.values.setdefault(metric, {}).setdefault(learner, {})[str(seed)] = float(value)

    def aggregates(self) -> dict[str, dict[str, dict[str, float]]]:
        out: dict[str, dict[str, dict[str, float]]] = {}
        for metric, by_learner in self.values.items():
            for learner, by_seed in by_learner.items():
                out.setdefault(learner, {})[metric] = summarize(list(by_seed.values())).as_dict()
        return out

    def save(self, name: str, params: Mapping[str, Any]) -> None:
        """Write this learner's (or reference column's) part of the test; its metrics file carries its
        memory bytes beside the aggregates, so `dvc exp show` puts cost next to accuracy. The results
        file records the hash of the `params` that produced it: a params change that leaves every number
        as it was still changes the report stage's inputs, so DVC's run cache never skips the report
        (and with it the pipeline's MLflow report run and publish) of a new experiment."""
        self.params_hash = params_hash(params)
        metrics: dict[str, Any] = dict(self.aggregates().get(name, {}))
        if (total := memory_bytes(self.memory.get(name))) is not None:
            metrics["memory_bytes"] = total
        write_json(metrics_path(self.test, name), metrics)
        payload = {**asdict(self), "rows": [asdict(r) for r in self.rows]}
        write_json(results_path(self.test, name), payload)

    @classmethod
    def load(cls, path: Path) -> TestResults:
        raw = json.loads(path.read_text())
        raw["rows"] = [Row(**r) for r in raw["rows"]]
        return cls(**raw)


def merge(parts: list[TestResults]) -> TestResults:
    """One test's results from its per-learner parts: values and memory united, rows and protocol from
    the first part, extras merged key by key (see `merge_extra`)."""
    merged = TestResults(parts[0].test, parts[0].protocol, list(parts[0].rows))
    for part in parts:
        for metric, by_learner in part.values.items():
            merged.values.setdefault(metric, {}).update(by_learner)
        merged.memory.update(part.memory)
        merged.extra = merge_extra(merged.extra, part.extra)
    return merged


def merge_extra(a: Any, b: Any) -> Any:
    """Mappings merge recursively; equal values stay once; lists add the items they lack; else a wins."""
    if isinstance(a, dict) and isinstance(b, dict):
        out = {k: merge_extra(v, b[k]) if k in b else v for k, v in a.items()}
        return out | {k: v for k, v in b.items() if k not in a}
    if isinstance(a, list) and isinstance(b, list) and a != b:
        return a + [item for item in b if item not in a]
    return a


def memory_bytes(cost: dict[str, int] | None) -> int | None:
    """A learner's memory: parameter bytes plus stored-item bytes (None without a cost)."""
    return None if cost is None else int(cost.get("param_bytes", 0)) + int(cost.get("item_bytes", 0))


def metrics_path(test: str, name: str) -> Path:
    return METRICS_DIR / test / f"{name}.json"


def results_path(test: str, name: str) -> Path:
    return RESULTS_DIR / test / f"{name}.json"


def evaluation_outputs(test: str, name: str) -> list[Path]:
    """What an evaluate stage writes for one learner (removed if the stage fails)."""
    return [metrics_path(test, name), results_path(test, name)]


def write_json(path: Path, payload: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(payload, indent=2, sort_keys=False, allow_nan=True))
    tmp.replace(path)
