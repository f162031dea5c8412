"""DVC stage `evaluate_novelty` (Test 3): familiar K vs novel U, and far out-of-distribution sets,
scored by every learner's post-stream state on every open-world seed (AUROC, FPR@95%TPR, ROC
curves); per-run MLflow children. The work is in `dualmem.evals.novelty`."""

from __future__ import annotations

import argparse
from pathlib import Path

from dualmem.cli import run_stage
from dualmem.evals.novelty import SECTION, NoveltyParams, run_novelty, write_roc_csvs
from dualmem.runner import prepared_dataset, stream_seeds, validate_learners
from dualmem.tracking import StageTracker

OUTPUTS = [Path("metrics/novelty.json"), Path("results/novelty.json"), Path("plots/novelty")]


def main(params: dict, args: argparse.Namespace) -> None:
    cfg = NoveltyParams.from_params(params)  # validate everything before any work
    validate_learners(params)
    stream_seeds(params, "openworld")
    prepared_dataset()  # a missing input fails here, before any work
    results, runs = run_novelty(params, cfg, progress=True)
    tracker = StageTracker("evaluate_novelty", params)
    for run in runs:
        tracker.add_run("novelty", run.learner, run.seed, {SECTION: params[SECTION]}, run.metrics)
    results.save()
    write_roc_csvs(results, Path("plots/novelty"))
    tracker.flush()


if __name__ == "__main__":
    run_stage(main, lambda args: OUTPUTS)
