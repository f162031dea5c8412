"""DVC stage `lm_evaluate@<learner>` (Test 6): bits per byte on every domain after every stage (the matrix
R), its metrics, memory bytes and evaluation speed, every seed; per-run MLflow children."""

from __future__ import annotations

import _interpreter  # noqa: F401  (first: re-executes under the project's .venv if needed)
import argparse

from tqdm import tqdm

from dualmem.core.cli import learner_argument, run_stage
from dualmem.core.results import evaluation_outputs, memory_bytes
from dualmem.core.tracking import StageTracker
from dualmem.lm.evaluation import collect, evaluate, evaluation_windows, lm_metrics
from dualmem.lm.pipeline import LMParams, checked_name


def main(params: dict, args: argparse.Namespace) -> None:
    cfg = LMParams.from_params(params)
    name = checked_name(cfg, args.learner)
    windows = evaluation_windows(cfg)
    tracker = StageTracker(args.stage, params)
    runs = []
    for seed in tqdm(cfg.seeds, desc=f"lm evaluate {name}"):
        run = evaluate(params, cfg, name, seed, windows)
        runs.append(run)
        series = {f"bpb_{d}": run.R[:, j].tolist() for j, d in enumerate(cfg.corpus.domains)}
        tracker.add_run("lm", name, seed, {"lm": {name: params["lm"]["learner_params"][name]}},
                        {**lm_metrics(run.R), "memory_bytes": memory_bytes(run.memory),
                         "eval_bytes_per_second": run.eval_bytes_per_second}, series)
    collect(cfg, runs).save(name, params)
    tracker.flush()


if __name__ == "__main__":
    run_stage(main, lambda args: evaluation_outputs("lm", args.learner), learner_argument,
              stage=lambda args: f"lm_evaluate@{args.learner}")
