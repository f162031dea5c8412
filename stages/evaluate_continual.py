"""DVC stage `evaluate_continual` (Test 1): the accuracy matrix of every learner and seed on the
class-incremental stream, its metrics, aggregated over seeds; per-run MLflow children."""

from __future__ import annotations

import argparse
from pathlib import Path

from tqdm import tqdm

from dualmem.cli import run_stage
from dualmem.evals.continual import STREAM, ContinualResult, collect_results, evaluate_learner, write_curves
from dualmem.runner import learner_names, learner_section, open_stream, prepared_dataset, stream_seeds
from dualmem.tracking import StageTracker

OUTPUTS = [Path("metrics/continual.json"), Path("results/continual.json"), Path("plots/continual")]


def track(tracker: StageTracker, params: dict, result: ContinualResult) -> None:
    R = result.R
    series = {f"acc_task_{j}": R[:, j].tolist() for j in range(R.shape[1])}
    series["average_accuracy"] = result.to_json()["average_accuracy_curve"]
    series["stored_items"] = [m["items"] for m in result.memory]
    final = result.memory[-1]
    run_params = {result.learner: dict(learner_section(params, result.learner).data),
                  "protocol": params["protocol"]["continual"], "encoder": params["encoder"]}
    tracker.add_run("continual", result.learner, result.seed, run_params,
                    {**result.metrics, "memory_bytes": final["item_bytes"] + final["param_bytes"]}, series)


def main(params: dict, args: argparse.Namespace) -> None:
    names = learner_names(params)
    seeds = stream_seeds(params, STREAM)
    prepared_dataset()
    tracker = StageTracker("evaluate_continual", params)
    runs: list[ContinualResult] = []
    for name in names:
        for seed in tqdm(seeds, desc=f"continual {name}"):
            result = evaluate_learner(params, name, open_stream(params, STREAM, seed))
            runs.append(result)
            track(tracker, params, result)
    collect_results(params, runs).save()
    write_curves(runs, Path("plots/continual"))
    tracker.flush()


if __name__ == "__main__":
    run_stage(main, lambda args: OUTPUTS)
