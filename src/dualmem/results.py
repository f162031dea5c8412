"""The one format every evaluate stage writes and the report reads.

An evaluate stage collects per-(metric, learner, seed) values in a `TestResults` and saves:
- `metrics/<test>.json`: aggregates per learner and metric (mean, std, sem, ci95, n) — the DVC metric
  that `dvc metrics show` / `dvc exp show` display;
- `results/<test>.json`: every per-seed value plus the row definitions, which the report turns into
  table rows with paired gaps.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from dualmem.paths import METRICS_DIR, RESULTS_DIR
from dualmem.stats import summarize


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

    def add(self, metric: str, learner: str, seed: int, value: float) -> None:
        self.values.setdefault(metric, {}).setdefault(learner, {})[str(seed)] = float(value)

    def aggregates(self) -> dict[str, dict[str, dict[str, float]]]:
        out: dict[str, dict[str, dict[str, float]]] = {}
        for metric, by_learner in self.values.items():
            for learner, by_seed in by_learner.items():
                out.setdefault(learner, {})[metric] = summarize(list(by_seed.values())).as_dict()
        return out

    def save(self) -> None:
        write_json(METRICS_DIR / f"{self.test}.json", self.aggregates())
        payload = {**asdict(self), "rows": [asdict(r) for r in self.rows]}
        write_json(RESULTS_DIR / f"{self.test}.json", payload)

    @classmethod
    def load(cls, path: Path) -> TestResults:
        raw = json.loads(path.read_text())
        raw["rows"] = [Row(**r) for r in raw["rows"]]
        return cls(**raw)


def write_json(path: Path, payload: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(payload, indent=2, sort_keys=False, allow_nan=True))
    tmp.replace(path)
