"""DVC stage `evaluate_ablation@dualmem`: the dual memory's encoder ablation (every encoder mode on the headline
metric of each test) and Test 1 at fixed memory sizes, on the first seeds of each stream; per-variant
MLflow children. The work is in `dualmem.evals.ablation`; the report renders its tables."""

from __future__ import annotations

import _interpreter  # noqa: F401  (first: re-executes under the project's .venv if needed)
import argparse

from dualmem.core.cli import evaluation_stage, learner_argument, run_stage
from dualmem.core.errors import ParamsError
from dualmem.core.results import evaluation_outputs
from dualmem.core.tracking import StageTracker
from dualmem.evals.ablation import LEARNER, SECTION, AblationParams, run_ablation
from dualmem.evals.fewshot import FewshotParams
from dualmem.evals.novelty import NoveltyParams
from dualmem.evals.recall_protocol import RecallParams
from dualmem.runner import learner_config, prepared_dataset


def main(params: dict, args: argparse.Namespace) -> None:
    if args.learner != LEARNER:
        raise ParamsError("evaluate_ablation", f"has variants of {LEARNER} only, not {args.learner!r}",
                          f"run it with --learner {LEARNER}")
    cfg = AblationParams.from_params(params)  # validate everything before any work
    learner_config(params, LEARNER)
    for section in (FewshotParams, NoveltyParams, RecallParams):
        section.from_params(params)
    prepared_dataset()
    results = run_ablation(params, cfg, progress=True)
    runs: dict[tuple[str, str], dict[str, float]] = {}
    for metric, by_variant in results.values.items():
        for variant, by_seed in by_variant.items():
            for seed, value in by_seed.items():
                runs.setdefault((variant, seed), {})[metric] = value
    tracker = StageTracker(args.stage, params)
    for (variant, seed), values in sorted(runs.items()):
        tracker.add_run("ablation", f"{LEARNER}[{variant}]", int(seed), {SECTION: params[SECTION]}, values)
    results.save(LEARNER, params)
    tracker.flush()


if __name__ == "__main__":
    run_stage(main, lambda args: evaluation_outputs("ablation", LEARNER), learner_argument,
              stage=evaluation_stage("ablation"))
