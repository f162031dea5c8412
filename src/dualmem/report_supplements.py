"""The report's own sections beside the main table: the dual memory's variants (stage
evaluate_ablation@dualmem) and Test 6, the language-model domain sequence (stages lm_*)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from dualmem.core.paths import RESULTS_DIR
from dualmem.core.results import TestResults, memory_bytes, merge
from dualmem.core.stats import summarize
from dualmem.literature import references_for
from dualmem.report import ReportSpec, comparison_lines, fmt, table_rows

ABLATION_FILE = RESULTS_DIR / "ablation" / "dualmem.json"


def count_or_fmt(metric: str, values: list[float]) -> str:
    """Counts (items, bytes) as whole numbers; metrics as mean ± CI."""
    if metric in ("items", "memory_bytes"):
        return f"{sum(values) / len(values):,.0f}"
    return fmt(summarize(values))


def load_ablation(path: Path = ABLATION_FILE) -> TestResults | None:
    """The dual memory's variants (stage evaluate_ablation@dualmem), if that stage ran."""
    return TestResults.load(path) if path.exists() else None


def clser_published(items: int | None) -> str:
    """CLS-ER's published final accuracy on class-incremental Split-MNIST at this buffer size, if any."""
    found = [r for r in references_for("clser") if items is not None and r.buffer_items == items]
    return f"{found[0].accuracy:.3f}" if found else "–"


def ablation_section(results: list[TestResults], ablation: TestResults | None) -> list[str]:
    """The dual memory's encoder ablation and memory sizes, with its main run and CLS-ER's published
    numbers at the same buffer sizes beside the latter."""
    if ablation is None:
        return []
    continual = next((r for r in results if r.test == "continual"), None)
    main = continual.values.get("final_accuracy", {}).get("dualmem") if continual else None
    lines = [f"## The dual memory's variants ({ablation.protocol})", ""]
    for group, title, columns in (("encoder", "Encoder ablation", ablation.extra["encoder_variants"]),
                                  ("memory", "Memory size (Test 1 at a fixed number of stored items)",
                                   ablation.extra["size_variants"])):
        extra = ["main run"] if group == "memory" and main else []
        lines += [f"### {title}", "", "| Metric | " + " | ".join(columns + extra) + " |",
                  "|---|" + "---|" * (len(columns) + len(extra))]
        for row in (r for r in ablation.rows if r.test == group):
            cells = [count_or_fmt(row.metric, list(ablation.values[row.metric][c].values()))
                     if c in ablation.values.get(row.metric, {}) else "–" for c in columns]
            if extra:
                cells.append(main_run_cell(continual, row.metric))
            lines.append(f"| {row.label} | " + " | ".join(cells) + " |")
        if group == "memory":
            items = [ablation.values["items"][c] for c in columns]
            published = [clser_published(int(next(iter(v.values())))) if v else "–" for v in items]
            if extra:
                published.append(clser_published(continual.memory.get("dualmem", {}).get("items")))
            lines.append("| CLS-ER final accuracy, published at these items (Arani et al. 2022) | "
                         + " | ".join(published) + " |")
        lines.append("")
    return lines


def main_run_cell(continual: TestResults, metric: str) -> str:
    """The main run's dualmem value of a memory-size row (every Test 1 seed)."""
    by_seed = continual.values.get(metric, {}).get("dualmem")
    if by_seed:
        return fmt(summarize(list(by_seed.values())))
    cost = continual.memory.get("dualmem", {})
    count = {"items": cost.get("items"), "memory_bytes": memory_bytes(cost)}.get(metric)
    return f"{count:,}" if count is not None else "–"




def lm_learners(params: dict) -> list[str]:
    """lm.learners (empty without Test 6)."""
    return list(params.get("lm", {}).get("learners", []))


def load_lm(learners: list[str], directory: Path = RESULTS_DIR) -> TestResults | None:
    """Test 6's results merged over `learners` (lm.learners), if its stages ran."""
    parts = [TestResults.load(path) for n in learners if (path := directory / "lm" / f"{n}.json").exists()]
    return merge(parts) if parts else None


def lm_section(lm: TestResults | None, spec: ReportSpec) -> list[str]:
    """Test 6: the comparison with both gaps, each learner's bits per byte per domain after every stage,
    and its memory and evaluation speed."""
    if lm is None:
        return []
    rows, columns = table_rows([lm], spec)
    domains = lm.extra["domains"]
    lines = ["## Test 6 — a language model fine-tuned domain after domain", "", f"Protocol: {lm.protocol}.", "",
             *comparison_lines(rows, columns, spec), "",
             "Bits per byte on each domain (mean over seeds) after each stage: stage 0 is the base, pretrained on "
             f"{domains[0]}; stage i follows domain i.", "",
             "| Learner | Stage | " + " | ".join(domains) + " |", "|---|---|" + "---|" * len(domains)]
    for learner in columns:
        mean = np.mean([np.array(r) for r in lm.extra["R"][learner].values()], axis=0)
        for stage, values in enumerate(mean):
            after = "base" if stage == 0 else f"after {domains[stage]}"
            lines.append(f"| {learner} | {after} | " + " | ".join(f"{v:.3f}" for v in values) + " |")
    lines += ["", "| Learner | Memory bytes (parameters + stored text) | Stored text bytes | Evaluation, scored "
              "bytes per second |", "|---|---|---|---|"]
    for learner in columns:
        cost = lm.memory.get(learner, {})
        speed = np.mean(list(lm.extra["eval_bytes_per_second"][learner].values()))
        lines.append(f"| {learner} | {memory_bytes(cost):,} | {cost.get('item_bytes', 0):,} | {speed:,.0f} |")
    return [*lines, ""]
