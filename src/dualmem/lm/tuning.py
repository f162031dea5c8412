"""Test 6's validation protocol: hyperparameters are chosen on the domains' validation slices, never on
their test slices. `python -m dualmem.lm.tuning LEARNER [--seed S] [key=value ...]` runs the learner's stream
from the seed's base model (models/lm/base, as `dvc repro lm_train_base` leaves it) and prints the
Test 6 metrics on validation windows, for params.yaml with the overrides (e.g.
`lm.learner_params.ewc.lam=1000`). docs/PROTOCOL.md records what was chosen on it."""

from __future__ import annotations

import argparse
import json
import sys

import numpy as np

from dualmem.core.params import load_params
from dualmem.core.seeding import set_threads
from dualmem.lm.evaluation import bits_per_byte, evaluation_windows, lm_metrics
from dualmem.lm.pipeline import LMParams, build, domains
from dualmem.tuning import with_overrides


def validate(params: dict, name: str, seed: int) -> dict[str, float]:
    cfg = LMParams.from_params(params)
    learner = build(params, cfg, name, seed)
    windows = evaluation_windows(cfg, split="validation")
    stream = domains(cfg, seed)
    learner.start(stream[0])
    rows = []
    for stage, domain in enumerate(stream):
        if stage:
            learner.learn_domain(domain)
            learner.sleep(domain)
        rows.append([bits_per_byte(learner, windows[d], cfg.eval.warmup) for d in cfg.corpus.domains])
    return {k: round(v, 4) for k, v in lm_metrics(np.array(rows)).items() if not k.startswith("forgetting_")}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m dualmem.lm.tuning", description=__doc__.split("\n")[0])
    parser.add_argument("learner")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("overrides", nargs="*", help="key=value changes to params.yaml")
    args = parser.parse_intermixed_args(argv)
    params = with_overrides(load_params(), args.overrides)
    set_threads(params)
    json.dump({"learner": args.learner, "overrides": args.overrides,
               "validation": validate(params, args.learner, args.seed)}, sys.stdout)
    print()


if __name__ == "__main__":
    main()
