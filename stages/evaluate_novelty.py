"""DVC stage `evaluate_novelty@<learner>` (Test 3): familiar K vs novel U, and far out-of-distribution
sets, scored by the learner's post-stream state on every open-world seed (AUROC, FPR@95%TPR, ROC
curves); per-run MLflow children. The work is in `dualmem.evals.novelty`."""

from __future__ import annotations

import _interpreter  # noqa: F401  (first: re-executes under the project's .venv if needed)
import argparse

from dualmem.core.cli import evaluation_stage, learner_argument, run_stage
from dualmem.core.results import evaluation_outputs
from dualmem.core.tracking import StageTracker
from dualmem.evals.novelty import SECTION, NoveltyParams, run_novelty
from dualmem.runner import learner_config, prepared_dataset, stream_seeds


def main(params: dict, args: argparse.Namespace) -> None:
    cfg = NoveltyParams.from_params(params)  # validate everything before any work
    learner_config(params, args.learner)
    stream_seeds(params, "openworld")
    prepared_dataset()  # a missing input fails here, before any work
    results, runs = run_novelty(params, args.learner, cfg, progress=True)
    tracker = StageTracker(args.stage, params)
    for run in runs:
        tracker.add_run("novelty", run.learner, run.seed, {SECTION: params[SECTION]}, run.metrics)
    results.save(args.learner, params)
    tracker.flush()


if __name__ == "__main__":
    run_stage(main, lambda args: evaluation_outputs("novelty", args.learner), learner_argument,
              stage=evaluation_stage("novelty"))
