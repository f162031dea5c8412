"""DVC stage `report`: merges every evaluate stage's per-learner results into reports/summary.md and
summary.csv (the comparison table with both gap columns, the per-learner table with memory bytes, the
literature check), the DVC plot data (plots/*.csv), PNG figures in reports/, and an MLflow child run
holding the table and figures; then it publishes every stage's spooled runs to MLflow."""

from __future__ import annotations

import _interpreter  # noqa: F401  (first: re-executes under the project's .venv if needed)
import argparse
import sys
from pathlib import Path

from dualmem.core.cli import run_stage
from dualmem.core.errors import DataError
from dualmem.core.paths import REPORTS_DIR
from dualmem.core.tracking import ChildRun, StageTracker, fail_fast_http, publish_spool, tracking_uri
from dualmem.plot_data import plot_tables
from dualmem.plots import plot_all
from dualmem.report import ReportSpec, load_results, markdown, missing_results, write_csv, write_plot_tables
from dualmem.report_supplements import ablation_section, lm_learners, lm_section, load_ablation, load_lm

SUMMARY_MD = REPORTS_DIR / "summary.md"
SUMMARY_CSV = REPORTS_DIR / "summary.csv"
FIGURES = REPORTS_DIR / "figures"
PLOTS = Path("plots")


def publish_or_warn() -> None:
    """Every stage's spooled runs, into MLflow in one go. A tracking store that cannot take them costs
    no result: the report is written, the runs stay spooled, and one line says where and what to do."""
    fail_fast_http()
    try:
        publish_spool(finish_own=True)
    except Exception as exc:  # noqa: BLE001 - whatever the store raised, the results are already safe
        print(f"warning: MLflow at {tracking_uri()} did not take the runs ({type(exc).__name__}); they stay in "
              f".dualmem/spool/; fix: start the tracking server or set MLFLOW_TRACKING_URI, then run "
              f"`python -m dualmem.core.tracking`", file=sys.stderr)


def main(params: dict, args: argparse.Namespace) -> None:
    spec = ReportSpec.from_params(params)
    missing = missing_results(spec.learners, lm_learners(params))
    if missing:  # a report without some learner's row would read as complete
        (path, stage), n = missing[0], len(missing)
        raise DataError(f"{path} is missing ({n} result file{'s' * (n > 1)} in all); fix: run `dvc repro` "
                        f"(this one: `dvc repro -s {stage}`)")
    results = load_results(spec.learners)
    ablation, lm = load_ablation(), load_lm(lm_learners(params))
    supplements = ablation_section(results, ablation) + lm_section(lm, spec)
    REPORTS_DIR.mkdir(parents=True, exist_ok=True)
    SUMMARY_MD.write_text(markdown(results, spec, supplements))
    write_csv(results, spec, SUMMARY_CSV)
    write_plot_tables(plot_tables(results, ablation, lm), PLOTS)
    figures = plot_all(results, FIGURES, ablation, lm)
    tracker = StageTracker("report", params)
    tracker.add(ChildRun(name="report", params={"report": params["report"]}, tags={"test": "report"},
                         artifacts=[SUMMARY_MD, SUMMARY_CSV, *figures]))
    tracker.flush()
    publish_or_warn()
    print(SUMMARY_MD.read_text())


if __name__ == "__main__":
    run_stage(main, lambda args: [SUMMARY_MD, SUMMARY_CSV, FIGURES, PLOTS])
