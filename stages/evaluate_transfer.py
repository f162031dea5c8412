"""DVC stage `evaluate_transfer` (Test 4): a linear probe on every learner's frozen post-stream
features (and a random encoder's) for the held-out classes U and, when prepared, Fashion-MNIST;
per-run MLflow children. The work is in `dualmem.evals.transfer`."""

from __future__ import annotations

import argparse
from pathlib import Path

from dualmem.cli import run_stage
from dualmem.evals.transfer import TransferParams, child_runs, run_transfer, write_plots
from dualmem.runner import prepared_dataset, validate_learners
from dualmem.tracking import StageTracker

SECTION = "evaluate_transfer"
OUTPUTS = [Path("metrics/transfer.json"), Path("results/transfer.json"), Path("plots/transfer")]


def main(params: dict, args: argparse.Namespace) -> None:
    cfg = TransferParams.from_params(params)  # validate everything before any work
    validate_learners(params)
    prepared_dataset()
    results = run_transfer(params, cfg, progress=True)
    tracker = StageTracker("evaluate_transfer", params)
    for column, seed, metrics in child_runs(results):
        tracker.add_run("transfer", column, seed, {SECTION: params[SECTION]}, metrics)
    results.save()
    write_plots(results, Path("plots/transfer"))
    tracker.flush()


if __name__ == "__main__":
    run_stage(main, lambda args: OUTPUTS)
