"""The comparison table: one row per (test, metric), a column per learner (mean ± 95% CI over seeds),
two paired gaps with their CIs and verdicts — the snapshot's (dualmem − finetune) and the honest one
(dualmem − the best other learner whose memory bytes are at most dualmem's, upper bounds aside) — the
published snapshot values as a reference column, a per-learner table with memory bytes, and the
literature check of Test 1."""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass
from pathlib import Path

from dualmem.core.errors import ParamsError
from dualmem.core.params import Section
from dualmem.core.paths import RESULTS_DIR
from dualmem.core.results import Row, TestResults, memory_bytes, merge, results_path
from dualmem.core.stats import Summary, paired_gap, summarize
from dualmem.literature import references_for

TEST_ORDER = ["continual", "fewshot", "novelty", "transfer", "recall"]
SUPPLEMENTS = ("ablation", "lm")  # results/<test>/ rendered as their own sections (report_supplements.py)
REFERENCE_COLUMNS = {"transfer": ["random"]}  # columns that are no learner (no memory, never "best other")
LITERATURE_TOLERANCE = 0.02  # published final accuracy within 2 points


@dataclass(frozen=True)
class ReportSpec:
    learners: list[str]  # run.learners, in column order
    gap: tuple[str, str]  # (subject, baseline) of the snapshot's gap, e.g. (dualmem, finetune)
    upper_bounds: list[str]  # oracles (of Tests 1-5 or 6): shown, never the "best other learner"

    @classmethod
    def from_params(cls, params: dict) -> ReportSpec:
        learners = Section.of(params, "run").string_list("learners")
        report = Section.of(params, "report")
        gap = tuple(report.names("gap", learners))
        if len(gap) != 2:
            raise ParamsError("report.gap", f"must name two learners, got {list(gap)}", "write [dualmem, finetune]")
        configured = learners + [n for n in Section.of(params, "lm").string_list("learners") if n not in learners]
        return cls(learners, (gap[0], gap[1]), report.names("upper_bounds", configured, allow_empty=True))


@dataclass
class Gap:
    summary: Summary | None
    verdict: str
    against: str = ""


@dataclass
class TableRow:
    test: str
    label: str
    cells: dict[str, Summary]
    gap: Gap
    best_gap: Gap
    reference: str


def load_results(learners: list[str], directory: Path = RESULTS_DIR) -> list[TestResults]:
    """Each test's results merged from its per-learner parts (run.learners order, reference columns last)."""
    merged = []
    tests = [t for t in TEST_ORDER if (directory / t).is_dir()]
    others = sorted(p.name for p in directory.iterdir() if p.is_dir() and p.name not in tests + list(SUPPLEMENTS))
    for test in tests + others:
        names = [*learners, *REFERENCE_COLUMNS.get(test, [])]
        parts = [TestResults.load(path) for n in names if (path := directory / test / f"{n}.json").exists()]
        if parts:
            merged.append(merge(parts))
    return merged


def missing_results(learners: list[str], lm_learners: list[str]) -> list[tuple[Path, str]]:
    """(result file, the stage that writes it) for each result the pipeline owes the report and lacks: every
    test of Tests 1-5 for every learner and reference column, Test 6 for every text learner."""
    owed = [(results_path(test, n), f"evaluate_{test}@{n}") for test in TEST_ORDER for n in learners]
    owed += [(results_path(test, column), f"evaluate_{test}_{column}")
             for test, columns in REFERENCE_COLUMNS.items() for column in columns]
    owed += [(results_path("lm", n), f"lm_evaluate@{n}") for n in lm_learners]
    return [(path, stage) for path, stage in owed if not path.exists()]


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


def paired(by_learner: dict[str, dict[str, float]], a: str, b: str, higher_is_better: bool) -> Gap:
    if a not in by_learner or b not in by_learner:
        return Gap(None, "–", b)
    seeds = sorted(set(by_learner[a]) & set(by_learner[b]), key=int)
    gap = paired_gap([by_learner[a][s] for s in seeds], [by_learner[b][s] for s in seeds])
    return Gap(gap, verdict(gap, higher_is_better, a, b), b)


def best_other(result: TestResults, row: Row, spec: ReportSpec) -> str | None:
    """The learner with the best mean on this row among those, other than the subject and the upper
    bounds, whose memory bytes in this test are at most the subject's."""
    subject = spec.gap[0]
    budget = memory_bytes(result.memory.get(subject))
    by_learner = result.values[row.metric]
    candidates = [n for n in by_learner if n != subject and n not in spec.upper_bounds
                  and budget is not None and (b := memory_bytes(result.memory.get(n))) is not None and b <= budget]
    if not candidates:
        return None
    sign = 1.0 if row.higher_is_better else -1.0
    return max(candidates, key=lambda n: sign * summarize(list(by_learner[n].values())).mean)


def table_rows(results: list[TestResults], spec: ReportSpec) -> tuple[list[TableRow], list[str]]:
    a, b = spec.gap
    rows: list[TableRow] = []
    columns: list[str] = []
    for result in results:
        for row in result.rows:
            if not row.in_table or row.metric not in result.values:
                continue
            by_learner = result.values[row.metric]
            columns += [n for n in by_learner if n not in columns]
            cells = {learner: summarize(list(v.values())) for learner, v in by_learner.items()}
            best = best_other(result, row, spec)
            best_gap = paired(by_learner, a, best, row.higher_is_better) if best else Gap(None, "–")
            reference = " / ".join(f"{k} {v}" for k, v in row.reference.items()) or "–"
            rows.append(TableRow(row.test, row.label, cells, paired(by_learner, a, b, row.higher_is_better),
                                 best_gap, reference))
    return rows, columns


def comparison_lines(rows: list[TableRow], columns: list[str], spec: ReportSpec) -> list[str]:
    """The comparison table: a column per learner, both paired gaps with verdicts, the snapshot's value."""
    a, b = spec.gap
    head = ["Test", "Metric", *columns, f"Gap ({a} − {b})", "Verdict",
            f"Gap ({a} − best other at ≤ its bytes)", "Verdict ", "Published snapshot"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        cells = [fmt(r.cells.get(c)) for c in columns]
        best = f"{fmt(r.best_gap.summary)} (vs {r.best_gap.against})" if r.best_gap.summary else "–"
        lines.append("| " + " | ".join([r.test, r.label, *cells, fmt(r.gap.summary), r.gap.verdict, best,
                                        r.best_gap.verdict, r.reference]) + " |")
    return lines


def markdown(results: list[TestResults], spec: ReportSpec, supplements: list[str] | None = None) -> str:
    """The whole summary; `supplements` (rendered sections) follow the per-learner table."""
    rows, columns = table_rows(results, spec)
    a = spec.gap[0]
    lines = [
        "# dualmem — measured results",
        "",
        "Every cell: mean ± 95% CI half-width over seeds (t distribution). Gaps: paired over seeds. "
        f"Verdict: the gap's CI excludes 0 or not. **Best other**: per row, the learner with the best mean "
        f"among those whose memory bytes (parameters + stored items) in that test are at most {a}'s, "
        f"upper bounds ({', '.join(spec.upper_bounds) or 'none'}) aside. The published snapshot is shown "
        "for reference only; every other number here was measured by this pipeline.",
        "",
        *comparison_lines(rows, columns, spec),
    ]
    lines += ["", "## Learners at a glance", "", *glance_table(results, spec), ""]
    lines += supplements or []
    lines += ["## Literature check (Test 1 final average accuracy)", "", *literature_table(results), ""]
    lines += ["## Protocols", ""]
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


GLANCE = [("continual", "final_accuracy", "T1 final acc"), ("continual", "retention", "T1 retention"),
          ("fewshot", "acc_k1", "T2 1-shot"), ("novelty", "auroc_novel", "T3 AUROC K vs U"),
          ("transfer", "probe_novel", "T4 probe U"), ("recall", "recall_5000", "T5 recall@5000")]


def glance_table(results: list[TestResults], spec: ReportSpec) -> list[str]:
    """One row per learner: memory bytes and items after the continual stream, and a headline per test."""
    by_test = {r.test: r for r in results}
    shown = [(t, m, label) for t, m, label in GLANCE if t in by_test and m in by_test[t].values]
    head = ["Learner", "Memory bytes (T1)", "Stored items (T1)", *(label for _, _, label in shown)]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    continual = by_test.get("continual")
    for name in spec.learners:
        cost = continual.memory.get(name) if continual else None
        cells = [fmt(summarize(list(by_test[t].values[m][name].values())))
                 if name in by_test[t].values[m] else "–" for t, m, _ in shown]
        items = f"{cost.get('items', 0):,}" if cost else "–"
        total = memory_bytes(cost)
        lines.append("| " + " | ".join([name + (" (upper bound)" if name in spec.upper_bounds else ""),
                                        f"{total:,}" if total is not None else "–", items, *cells]) + " |")
    return lines


def literature_table(results: list[TestResults]) -> list[str]:
    """Each learner's measured Test 1 final accuracy beside the published numbers for Split-MNIST
    class-IL, with the items it stores, and a verdict (within 2 points or not; why: docs/LITERATURE.md)."""
    continual = next((r for r in results if r.test == "continual"), None)
    if continual is None or "final_accuracy" not in continual.values:
        return ["(no Test 1 results)"]
    lines = ["| Learner | Measured (items stored) | Published | Published memory (items) | Source | Verdict |",
             "|---|---|---|---|---|---|"]
    for name, by_seed in continual.values["final_accuracy"].items():
        measured = summarize(list(by_seed.values()))
        items = continual.memory.get(name, {}).get("items", 0)
        refs = references_for(name)
        if not refs:
            lines.append(f"| {name} | {fmt(measured)} ({items:,}) | – | – | no published number for this "
                         "protocol | – |")
        for ref in refs:
            spread = f" ± {ref.spread:.3f}" if ref.spread is not None else ""
            word = literature_verdict(measured.mean - ref.accuracy, ref.buffer_items, items)
            lines.append(f"| {name} | {fmt(measured)} ({items:,}) | {ref.accuracy:.3f}{spread} | "
                         f"{ref.buffer_items if ref.buffer_items else '–'} | {ref.source} | {word} |")
    return lines


def literature_verdict(diff: float, published_items: int | None, stored_items: int) -> str:
    """Within 2 points, or by how much it differs — and whether the memories compare at all."""
    if abs(diff) <= LITERATURE_TOLERANCE:
        return "within 2 points"
    word = f"differs by {diff * 100:+.1f} points"
    if published_items and stored_items and abs(published_items - stored_items) > 0.2 * stored_items:
        word += f"; published with {published_items:,} items, ours stores {stored_items:,}"
    return word + " (why: docs/LITERATURE.md)"


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


def write_csv(results: list[TestResults], spec: ReportSpec, path: Path) -> None:
    rows, columns = table_rows(results, spec)
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        header = ["test", "metric"]
        for c in columns:
            header += [f"{c}_mean", f"{c}_ci95", f"{c}_n"]
        writer.writerow([*header, "gap_mean", "gap_ci95", "gap_n", "verdict", "best_other", "best_gap_mean",
                         "best_gap_ci95", "best_gap_n", "best_verdict", "reference"])
        for r in rows:
            line = [r.test, r.label]
            for c in columns:
                s = r.cells.get(c)
                line += [f"{s.mean:.6f}", f"{s.ci95:.6f}", s.n] if s else ["", "", ""]
            for g in (r.gap, r.best_gap):
                if g is r.best_gap:
                    line.append(g.against)
                line += [f"{g.summary.mean:.6f}", f"{g.summary.ci95:.6f}", g.summary.n] if g.summary else ["", "", ""]
                line.append(g.verdict)
            writer.writerow([*line, r.reference])


def write_plot_tables(tables: dict[str, tuple[list[str], list[list[object]]]], directory: Path) -> list[Path]:
    """plots/<name>.csv for DVC plots, one file per table."""
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for name, (header, rows) in tables.items():
        path = directory / f"{name}.csv"
        with path.open("w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(header)
            writer.writerows(rows)
        written.append(path)
    return written


__all__ = ["ReportSpec", "load_results", "markdown", "results_path", "write_csv", "write_plot_tables"]
