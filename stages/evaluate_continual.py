"""DVC stage `evaluate_continual` (Test 1): the accuracy matrix of every learner and seed on the
class-incremental stream, its metrics, aggregated over seeds; per-run MLflow children."""

from __future__ import annotations

import argparse
from pathlib import Path

from tqdm import tqdm

from dualmem.cli import run_stage
from dualmem.evals.continual import STREAM, ContinualResult, collect_results, evaluate_learner, write_curves
from dualmem.runner import learner_names, learner_section, open_stream, prepared_dataset, stream_seeds
from dualmem.tracking import ChildRun, StageTracker

OUTPUTS = [Path("metrics/continual.json"), Path("results/continual.json"), Path("plots/continual")]


def child_run(params: dict, result: ContinualResult) -> ChildRun:
    R = result.R
    series = {f"acc_task_{j}": R[:, j].tolist() for j in range(R.shape[1])}
    series["average_accuracy"] = result.to_json()["average_accuracy_curve"]
    series["stored_items"] = [m["items"] for m in result.memory]
    return ChildRun(
        name=f"continual/{result.learner}/seed{result.seed}",
        params={result.learner: dict(learner_section(params, result.learner).data), "seed": result.seed,
                "protocol": params["protocol"]["continual"], "encoder": params["encoder"]},
        metrics={**result.metrics, "memory_bytes": result.memory[-1]["item_bytes"] + result.memory[-1]["param_bytes"]},
        series=series,
        tags={"test": "continual", "learner": result.learner, "seed": str(result.seed)},
    )


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
            tracker.add(child_run(params, result))
    collect_results(params, runs).save()
    write_curves(runs, Path("plots/continual"))
    tracker.flush()


if __name__ == "__main__":
    run_stage(main, lambda args: OUTPUTS)
