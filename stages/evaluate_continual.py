"""DVC stage `evaluate_continual@<learner>` (Test 1): the learner's accuracy matrix on the
class-incremental stream for every seed, its metrics; per-run MLflow children."""

from __future__ import annotations

import _interpreter  # noqa: F401  (first: re-executes under the project's .venv if needed)
import argparse

from tqdm import tqdm

from dualmem.core.cli import evaluation_stage, learner_argument, run_stage
from dualmem.core.results import evaluation_outputs
from dualmem.core.tracking import StageTracker
from dualmem.evals.continual import STREAM, ContinualResult, collect_results, evaluate_learner
from dualmem.runner import learner_section, open_stream, prepared_dataset, stream_seeds


def track(tracker: StageTracker, params: dict, result: ContinualResult) -> None:
    R = result.R
    series = {f"acc_task_{j}": R[:, j].tolist() for j in range(R.shape[1])}
    series["average_accuracy"] = result.to_json()["average_accuracy_curve"]
    series["stored_items"] = [m["items"] for m in result.memory]
    final = result.memory[-1]
    run_params = {result.learner: dict(learner_section(params, result.learner).data),
                  "protocol": params["protocol"]["continual"], "encoder": params["encoder"],
                  "memory": params["memory"]}
    tracker.add_run("continual", result.learner, result.seed, run_params,
                    {**result.metrics, "memory_bytes": final["item_bytes"] + final["param_bytes"]}, series)


def main(params: dict, args: argparse.Namespace) -> None:
    seeds = stream_seeds(params, STREAM)
    learner_section(params, args.learner)
    prepared_dataset()
    tracker = StageTracker(args.stage, params)
    runs: list[ContinualResult] = []
    for seed in tqdm(seeds, desc=f"continual {args.learner}"):
        result = evaluate_learner(params, args.learner, open_stream(params, STREAM, seed))
        runs.append(result)
        track(tracker, params, result)
    collect_results(params, runs).save(args.learner, params)
    tracker.flush()


if __name__ == "__main__":
    run_stage(main, lambda args: evaluation_outputs("continual", args.learner), learner_argument,
              stage=evaluation_stage("continual"))
