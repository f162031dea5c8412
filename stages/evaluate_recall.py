"""DVC stage `evaluate_recall@<learner>` (Test 5): long-horizon recall of N arbitrary cue -> target
items shown once, for the learner's post-stream state on every open-world seed; recall vs N and vs
item age, bytes per item, query time; per-run MLflow children. The work is in `dualmem.evals.recall`."""

from __future__ import annotations

import _interpreter  # noqa: F401  (first: re-executes under the project's .venv if needed)
import argparse

from dualmem.core.cli import evaluation_stage, learner_argument, run_stage
from dualmem.core.results import evaluation_outputs
from dualmem.core.tracking import StageTracker
from dualmem.evals.recall import RecallParams, child_runs, run_recall
from dualmem.runner import learner_config, prepared_dataset

SECTION = "evaluate_recall"


def main(params: dict, args: argparse.Namespace) -> None:
    cfg = RecallParams.from_params(params)  # validate everything before any work
    learner_config(params, args.learner)
    prepared_dataset()
    results = run_recall(params, args.learner, cfg, progress=True)
    tracker = StageTracker(args.stage, params)
    for learner, seed, metrics, series in child_runs(results):
        # series step = index into evaluate_recall.sizes
        tracker.add_run("recall", learner, seed, {SECTION: params[SECTION]}, metrics, {"recall": series})
    results.save(args.learner, params)
    tracker.flush()


if __name__ == "__main__":
    run_stage(main, lambda args: evaluation_outputs("recall", args.learner), learner_argument,
              stage=evaluation_stage("recall"))
