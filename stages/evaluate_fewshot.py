"""DVC stage `evaluate_fewshot@<learner>` (Test 2): N-way k-shot episodes over the held-out classes U,
and the generalised K ∪ U variant, for the learner's post-stream state on every open-world seed;
per-run MLflow children. The work is in `dualmem.evals.fewshot`."""

from __future__ import annotations

import _interpreter  # noqa: F401  (first: re-executes under the project's .venv if needed)
import argparse

from dualmem.core.cli import evaluation_stage, learner_argument, run_stage
from dualmem.core.results import evaluation_outputs
from dualmem.core.tracking import StageTracker
from dualmem.evals.fewshot import SECTION, FewshotParams, run_fewshot
from dualmem.runner import learner_config, prepared_dataset, stream_seeds


def main(params: dict, args: argparse.Namespace) -> None:
    cfg = FewshotParams.from_params(params)  # validate everything before any work
    learner_config(params, args.learner)
    stream_seeds(params, "openworld")
    prepared_dataset()  # a missing input fails here, before any work
    results, runs = run_fewshot(params, args.learner, cfg, progress=True)
    tracker = StageTracker(args.stage, params)
    for run in runs:
        memory_bytes = run.memory["param_bytes"] + run.memory["item_bytes"]
        tracker.add_run("fewshot", run.learner, run.seed, {SECTION: params[SECTION]},
                        {**run.metrics, "memory_bytes": memory_bytes})
    results.save(args.learner, params)
    tracker.flush()


if __name__ == "__main__":
    run_stage(main, lambda args: evaluation_outputs("fewshot", args.learner), learner_argument,
              stage=evaluation_stage("fewshot"))
