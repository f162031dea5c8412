"""DVC stage `evaluate_fewshot` (Test 2): N-way k-shot episodes over the held-out classes U, and the
generalised K ∪ U variant, for every learner's post-stream state on every open-world seed;
per-run MLflow children. The work is in `dualmem.evals.fewshot`."""

from __future__ import annotations

import argparse
from pathlib import Path

from dualmem.cli import run_stage
from dualmem.evals.fewshot import SECTION, FewshotParams, run_fewshot, write_plot_csv
from dualmem.runner import prepared_dataset, stream_seeds, validate_learners
from dualmem.tracking import StageTracker

OUTPUTS = [Path("metrics/fewshot.json"), Path("results/fewshot.json"), Path("plots/fewshot")]


def main(params: dict, args: argparse.Namespace) -> None:
    cfg = FewshotParams.from_params(params)  # validate everything before any work
    validate_learners(params)
    stream_seeds(params, "openworld")
    prepared_dataset()  # a missing input fails here, before any work
    results, runs = run_fewshot(params, cfg, progress=True)
    tracker = StageTracker("evaluate_fewshot", params)
    for run in runs:
        memory_bytes = run.memory["param_bytes"] + run.memory["item_bytes"]
        tracker.add_run("fewshot", run.learner, run.seed, {SECTION: params[SECTION]},
                        {**run.metrics, "memory_bytes": memory_bytes})
    results.save()
    write_plot_csv(results, cfg, Path("plots/fewshot"))
    tracker.flush()


if __name__ == "__main__":
    run_stage(main, lambda args: OUTPUTS)
