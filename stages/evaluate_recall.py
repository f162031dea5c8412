"""DVC stage `evaluate_recall` (Test 5): long-horizon recall of N arbitrary cue -> target items
shown once, for every learner's post-stream state on every open-world seed; recall vs N and vs
item age, bytes per item, query time; per-run MLflow children. The work is in
`dualmem.evals.recall`."""

from __future__ import annotations

import argparse
from pathlib import Path

from dualmem.cli import run_stage
from dualmem.evals.recall import RecallParams, child_runs, run_recall, write_plots
from dualmem.runner import prepared_dataset, validate_learners
from dualmem.tracking import StageTracker

SECTION = "evaluate_recall"
OUTPUTS = [Path("metrics/recall.json"), Path("results/recall.json"), Path("plots/recall")]


def main(params: dict, args: argparse.Namespace) -> None:
    cfg = RecallParams.from_params(params)  # validate everything before any work
    validate_learners(params)
    prepared_dataset()
    results = run_recall(params, cfg, progress=True)
    tracker = StageTracker("evaluate_recall", params)
    for learner, seed, metrics, series in child_runs(results):
        # series step = index into evaluate_recall.sizes
        tracker.add_run("recall", learner, seed, {SECTION: params[SECTION]}, metrics, {"recall": series})
    results.save()
    write_plots(results, Path("plots/recall"))
    tracker.flush()


if __name__ == "__main__":
    run_stage(main, lambda args: OUTPUTS)
