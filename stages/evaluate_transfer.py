"""DVC stage `evaluate_transfer@<learner>` (Test 4): a linear probe on the learner's frozen post-stream
features for the held-out classes U and, when prepared, Fashion-MNIST; `--learner random` probes an
untrained encoder of the same architecture (the reference column, stage `evaluate_transfer_random`).
Per-run MLflow children. The work is in `dualmem.evals.transfer`."""

from __future__ import annotations

import _interpreter  # noqa: F401  (first: re-executes under the project's .venv if needed)
import argparse

from dualmem.core.cli import learner_argument, run_stage
from dualmem.core.results import evaluation_outputs
from dualmem.core.tracking import StageTracker
from dualmem.evals.transfer import RANDOM, TransferParams, child_runs, run_transfer
from dualmem.runner import learner_config, prepared_dataset

SECTION = "evaluate_transfer"


def main(params: dict, args: argparse.Namespace) -> None:
    cfg = TransferParams.from_params(params)  # validate everything before any work
    if args.learner != RANDOM:
        learner_config(params, args.learner)
    prepared_dataset()
    results = run_transfer(params, args.learner, cfg, progress=True)
    tracker = StageTracker(args.stage, params)
    for column, seed, metrics in child_runs(results):
        tracker.add_run("transfer", column, seed, {SECTION: params[SECTION]}, metrics)
    results.save(args.learner, params)
    tracker.flush()


if __name__ == "__main__":
    run_stage(main, lambda args: evaluation_outputs("transfer", args.learner), learner_argument,
              stage=lambda args: "evaluate_transfer_random" if args.learner == RANDOM else
              f"evaluate_transfer@{args.learner}")
