"""The comparison table: one row per (test, metric), a column per learner (mean ± 95% CI over
seeds), the paired Gap (dualmem − finetune by default) with its CI, a verdict that says plainly who
wins, and the published snapshot values as a reference column."""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass
from pathlib import Path

from dualmem.paths import RESULTS_DIR
from dualmem.results import TestResults
from dualmem.stats import Summary, paired_gap, summarize

TEST_ORDER = ["continual", "fewshot", "novelty", "transfer", "recall"]


@dataclass
class TableRow:
    test: str
    label: str
    cells: dict[str, Summary]
    gap: Summary | None
    verdict: str
    reference: str


def load_results(directory: Path = RESULTS_DIR) -> list[TestResults]:
    found = {p.stem: p for p in directory.glob("*.json")}
    order = [t for t in TEST_ORDER if t in found] + sorted(set(found) - set(TEST_ORDER))
    return [TestResults.load(found[t]) for t in order]


def fmt(s: Summary | None, digits: int = 3) -> str:
    if s is None:
        return "–"
    if s.n < 2 or math.isnan(s.ci95):
        return f"{s.mean:.{digits}f} (n={s.n})"
    return f"{s.mean:.{digits}f} ± {s.ci95:.{digits}f}"


def verdict(gap: Summary | None, higher_is_better: bool, a: str, b: str) -> str:
    if gap is None:
        return "–"
    if gap.n < 2 or math.isnan(gap.ci95):
        return "too few seeds to tell"
    low, high = gap.mean - gap.ci95, gap.mean + gap.ci95
    if low <= 0 <= high:
        return "no clear difference"
    a_better = (low > 0) == higher_is_better
    return f"{a} better" if a_better else f"{a} WORSE than {b}"


def table_rows(results: list[TestResults], gap_pair: tuple[str, str]) -> tuple[list[TableRow], list[str]]:
    a, b = gap_pair
    rows: list[TableRow] = []
    columns: list[str] = []
    for result in results:
        for row in result.rows:
            if not row.in_table or row.metric not in result.values:
                continue
            by_learner = result.values[row.metric]
            for learner in by_learner:
                if learner not in columns:
                    columns.append(learner)
            cells = {learner: summarize(list(v.values())) for learner, v in by_learner.items()}
            gap = None
            if a in by_learner and b in by_learner:
                seeds = sorted(set(by_learner[a]) & set(by_learner[b]), key=int)
                gap = paired_gap([by_learner[a][s] for s in seeds], [by_learner[b][s] for s in seeds])
            reference = " / ".join(f"{k} {v}" for k, v in row.reference.items()) or "–"
            rows.append(TableRow(row.test, row.label, cells, gap, verdict(gap, row.higher_is_better, a, b),
                                 reference))
    return rows, columns


def markdown(results: list[TestResults], gap_pair: tuple[str, str]) -> str:
    rows, columns = table_rows(results, gap_pair)
    a, b = gap_pair
    head = ["Test", "Metric", *columns, f"Gap ({a} − {b})", "Verdict", "Published snapshot"]
    lines = [
        "# dualmem — measured results",
        "",
        "Every cell: mean ± 95% CI half-width over seeds (t distribution). Gap: paired over seeds. "
        "Verdict: the gap's CI excludes 0 or not. The published snapshot is shown for reference only; "
        "every other number here was measured by this pipeline.",
        "",
        "| " + " | ".join(head) + " |",
        "|" + "---|" * len(head),
    ]
    for r in rows:
        cells = [fmt(r.cells.get(c)) for c in columns]
        lines.append("| " + " | ".join([r.test, r.label, *cells, fmt(r.gap), r.verdict, r.reference]) + " |")
    lines += ["", "## Protocols", ""]
    lines += [f"- **{res.test}**: {res.protocol}" for res in results]
    lines += ["", "## Memory cost (after the stream)", "",
              "| Test | Learner | Parameters | Parameter bytes | Stored items | Item bytes |",
              "|---|---|---|---|---|---|"]
    for tests, learner, cost in memory_groups(results):
        lines.append(f"| {tests} | {learner} | {cost.get('params', 0):,} | {cost.get('param_bytes', 0):,} "
                     f"| {cost.get('items', 0):,} | {cost.get('item_bytes', 0):,} |")
    for res in results:
        for note in res.extra.get("notes", []):
            lines.append(f"\n> note ({res.test}): {note}")
    return "\n".join(lines) + "\n"


def memory_groups(results: list[TestResults]) -> list[tuple[str, str, dict[str, int]]]:
    """(tests, learner, cost) with the tests that share a learner's post-stream state merged."""
    groups: dict[tuple[str, str], list[str]] = {}
    costs: dict[tuple[str, str], dict[str, int]] = {}
    for res in results:
        for learner, cost in res.memory.items():
            key = (learner, repr(sorted(cost.items())))
            groups.setdefault(key, []).append(res.test)
            costs[key] = cost
    return [(", ".join(tests), learner, costs[(learner, c)]) for (learner, c), tests in groups.items()]


def write_csv(results: list[TestResults], gap_pair: tuple[str, str], path: Path) -> None:
    rows, columns = table_rows(results, gap_pair)
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        header = ["test", "metric"]
        for c in columns:
            header += [f"{c}_mean", f"{c}_ci95", f"{c}_n"]
        writer.writerow([*header, "gap_mean", "gap_ci95", "gap_n", "verdict", "reference"])
        for r in rows:
            line = [r.test, r.label]
            for c in columns:
                s = r.cells.get(c)
                line += [f"{s.mean:.6f}", f"{s.ci95:.6f}", s.n] if s else ["", "", ""]
            g = r.gap
            line += [f"{g.mean:.6f}", f"{g.ci95:.6f}", g.n] if g else ["", "", ""]
            writer.writerow([*line, r.verdict, r.reference])
