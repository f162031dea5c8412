"""DVC stage `lm_sequential@<learner>` (Test 6, wake): from the base model, the learner meets the domains
in order, every seed; its state is saved after every stage."""

from __future__ import annotations

import _interpreter  # noqa: F401  (first: re-executes under the project's .venv if needed)
import argparse
import time

from tqdm import tqdm

from dualmem.core.cli import learner_argument, run_stage
from dualmem.core.tracking import StageTracker
from dualmem.lm.pipeline import LM_MODELS, LMParams, checked_name, run_wake


def main(params: dict, args: argparse.Namespace) -> None:
    cfg = LMParams.from_params(params)
    name = checked_name(cfg, args.learner)
    tracker = StageTracker(args.stage, params)
    for seed in tqdm(cfg.seeds, desc=f"lm {name}"):
        start = time.perf_counter()
        run_wake(params, cfg, name, seed)
        tracker.add_run("lm/wake", name, seed, {"lm": {name: params["lm"]["learner_params"][name]}},
                        {"wake_seconds": time.perf_counter() - start})
    tracker.flush()


if __name__ == "__main__":
    run_stage(main, lambda args: [LM_MODELS / args.learner / "wake"], learner_argument,
              stage=lambda args: f"lm_sequential@{args.learner}")
