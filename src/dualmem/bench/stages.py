"""Wall time and peak memory of every stage in the last `dvc repro` of a project, from the records
each stage leaves in `<project>/.dualmem/stages/` (see `dualmem.core.cli.record_stage`)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

REFERENCE_LEARNERS = ("finetune", "joint", "dualmem")
LATER_KINDS = ("evaluate_ablation", "lm_")  # stage kinds added after the reference content was fixed (Tests 1-5)


@dataclass(frozen=True)
class StageRecord:
    stage: str
    status: str
    wall_seconds: float
    peak_rss_mb: float
    finished_at: str

    @property
    def kind(self) -> str:
        return self.stage.split("@", 1)[0]

    @property
    def tests_1_to_5(self) -> bool:
        """A stage of the reference content (Tests 1-5), not the ablation or Test 6 that came later."""
        return not self.kind.startswith(LATER_KINDS)

    @property
    def learner(self) -> str | None:
        if "@" not in self.stage or self.kind == "train_encoder":
            return None
        item = self.stage.split("@", 1)[1]
        return item.rsplit("-", 1)[0] if self.kind in ("sequential", "consolidate") else item


def stage_records(project: Path) -> list[StageRecord]:
    folder = project / ".dualmem" / "stages"
    records = [StageRecord(**json.loads(p.read_text())) for p in sorted(folder.glob("*.json"))]
    return sorted(records, key=lambda r: r.finished_at)


def by_kind(records: list[StageRecord]) -> dict[str, tuple[int, float, float]]:
    """Stage kind -> (stages, total seconds, largest peak MiB), slowest kind first."""
    out: dict[str, tuple[int, float, float]] = {}
    for r in records:
        n, total, peak = out.get(r.kind, (0, 0.0, 0.0))
        out[r.kind] = (n + 1, total + r.wall_seconds, max(peak, r.peak_rss_mb))
    return dict(sorted(out.items(), key=lambda kv: -kv[1][1]))


def by_learner(records: list[StageRecord]) -> dict[str, float]:
    out: dict[str, float] = {}
    for r in records:
        if r.learner:
            out[r.learner] = out.get(r.learner, 0.0) + r.wall_seconds
    return dict(sorted(out.items(), key=lambda kv: -kv[1]))
