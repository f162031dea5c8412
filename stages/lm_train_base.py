"""DVC stage `lm_train_base` (Test 6): per seed, the byte-level model pretrained on the general domain
only — the base every learner fine-tunes from."""

from __future__ import annotations

import _interpreter  # noqa: F401  (first: re-executes under the project's .venv if needed)
import argparse
import time

from tqdm import tqdm

from dualmem.core.cli import run_stage
from dualmem.core.tracking import StageTracker
from dualmem.lm.pipeline import LM_MODELS, LMParams, base_path, domains, save, train_base


def main(params: dict, args: argparse.Namespace) -> None:
    cfg = LMParams.from_params(params)
    tracker = StageTracker(args.stage, params)
    for seed in tqdm(cfg.seeds, desc="lm base"):
        start = time.perf_counter()
        model = train_base(cfg, seed, domains(cfg, seed)[0], progress=True)
        save({"state": model.state_dict(), "model": cfg.model.as_dict()}, base_path(seed))
        tracker.add_run("lm/base", "base", seed, {"lm": {"model": params["lm"]["model"], "base": params["lm"]["base"]}},
                        {"seconds": time.perf_counter() - start})
    tracker.flush()


if __name__ == "__main__":
    run_stage(main, lambda args: [LM_MODELS / "base"])
