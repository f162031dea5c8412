"""DVC stage `lm_consolidate@<learner>` (Test 6, sleep): after each domain, the learner's wake state (with
what earlier sleeps consolidated) is slept on; only learners with a sleep phase have this stage."""

from __future__ import annotations

import _interpreter  # noqa: F401  (first: re-executes under the project's .venv if needed)
import argparse

from tqdm import tqdm

from dualmem.core.cli import learner_argument, run_stage
from dualmem.core.errors import ParamsError
from dualmem.core.tracking import StageTracker
from dualmem.lm.pipeline import LM_MODELS, LMParams, checked_name, run_sleep
from dualmem.lm.text_learner import text_learner_class


def main(params: dict, args: argparse.Namespace) -> None:
    cfg = LMParams.from_params(params)
    name = checked_name(cfg, args.learner)
    if not text_learner_class(name).has_sleep:
        raise ParamsError("lm.learners", f"names {name!r}, which has no sleep phase", "consolidate dualmem only")
    tracker = StageTracker(args.stage, params)
    for seed in tqdm(cfg.seeds, desc=f"lm sleep {name}"):
        seconds = run_sleep(params, cfg, name, seed)
        tracker.add_run("lm/sleep", name, seed, {"lm": {name: params["lm"]["learner_params"][name]}},
                        {"sleep_seconds": sum(seconds)}, {"domain_sleep_seconds": seconds})
    tracker.flush()


if __name__ == "__main__":
    run_stage(main, lambda args: [LM_MODELS / args.learner / "sleep"], learner_argument,
              stage=lambda args: f"lm_consolidate@{args.learner}")
