"""DVC stage `report`: reports/summary.md and summary.csv (the comparison table with gap columns),
PNG figures in reports/, and an MLflow child run holding the table and figures."""

from __future__ import annotations

import argparse

from dualmem.cli import run_stage
from dualmem.errors import ParamsError, UserError
from dualmem.learners import REGISTRY
from dualmem.params import Section
from dualmem.paths import REPORTS_DIR
from dualmem.plots import plot_all
from dualmem.report import load_results, markdown, write_csv
from dualmem.tracking import ChildRun, StageTracker

SUMMARY_MD = REPORTS_DIR / "summary.md"
SUMMARY_CSV = REPORTS_DIR / "summary.csv"
FIGURES = REPORTS_DIR / "figures"


def main(params: dict, args: argparse.Namespace) -> None:
    gap = tuple(Section.of(params, "report").names("gap", REGISTRY))
    if len(gap) != 2:
        raise ParamsError("report.gap", f"must name two learners, got {list(gap)}", "write [dualmem, finetune]")
    results = load_results()
    if not results:
        raise UserError("no results/*.json to report; fix: run `dvc repro` (the evaluate stages)")
    REPORTS_DIR.mkdir(parents=True, exist_ok=True)
    SUMMARY_MD.write_text(markdown(results, gap))
    write_csv(results, gap, SUMMARY_CSV)
    figures = plot_all(results, FIGURES)
    tracker = StageTracker("report", params)
    tracker.add(ChildRun(name="report", params={"report": params["report"]}, tags={"test": "report"},
                         artifacts=[SUMMARY_MD, SUMMARY_CSV, *figures]))
    tracker.flush()
    print(SUMMARY_MD.read_text())


if __name__ == "__main__":
    run_stage(main, lambda args: [SUMMARY_MD, SUMMARY_CSV, FIGURES])
