"""The whole of params.yaml, validated at once by the first stage (`prepare`) and by `make check`:
every section's parser runs (types, ranges, choices, cross-checks), and then any key no parser read
is unknown and fails, naming the nearest known key. A bad value anywhere stops the pipeline before
its first minute of work, not when its own stage comes round."""

from __future__ import annotations

import argparse
import difflib
import sys

from dualmem.bench import BenchConfig
from dualmem.core.errors import ParamsError, UserError
from dualmem.core.params import KeyAudit, Section, load_params
from dualmem.core.seeding import run_threads
from dualmem.data.sources import DataParams
from dualmem.data.splits import ProtocolParams, stream_seeds
from dualmem.encoders import EncoderParams
from dualmem.evals.ablation import AblationParams
from dualmem.evals.fewshot import FewshotParams
from dualmem.evals.novelty import NoveltyParams
from dualmem.evals.recall_protocol import RecallParams
from dualmem.evals.transfer import TransferParams
from dualmem.learners import available
from dualmem.lm.pipeline import LMParams
from dualmem.report import ReportSpec
from dualmem.runner import learner_config, learner_names, memory_budget, sleeping_learners


def parse_every_section(params: dict) -> None:
    data = DataParams.from_params(params)
    learner_names(params)
    run_threads(params)
    for stream in ("continual", "openworld"):
        stream_seeds(params, stream)
    ProtocolParams.from_params(params, data.n_classes)
    EncoderParams.from_params(params)
    memory_budget(params)
    for name in Section.of(params, "learners").data:
        if name not in available():
            close = difflib.get_close_matches(str(name), available(), n=1)
            hint = f"did you mean 'learners.{close[0]}'?" if close else f"learners: {', '.join(available())}"
            raise ParamsError(f"learners.{name}", "is not a known learner", f"remove or rename it; {hint}")
        learner_config(params, name)
    sleeping_learners(params)
    FewshotParams.from_params(params)
    NoveltyParams.from_params(params)
    TransferParams.from_params(params)
    RecallParams.from_params(params)
    AblationParams.from_params(params)
    LMParams.from_params(params)
    ReportSpec.from_params(params)
    BenchConfig.from_params(params)


def validate_params(params: dict) -> None:
    """Raise ParamsError for the first bad or unknown key of `params`."""
    with KeyAudit() as audit:
        parse_every_section(params)
    for key, beside in audit.unread_keys(params):
        close = difflib.get_close_matches(key, beside, n=1)
        hint = f"did you mean '{close[0]}'?" if close else "see params.yaml in the repository for the keys"
        raise ParamsError(key, "is not a known key", f"remove it or rename it; {hint}")


def main(argv: list[str] | None = None) -> None:
    """`python -m dualmem.validate [--params FILE]` (`make check`): exit 0 and say so, or exit 2 with
    one line."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--params", default="params.yaml")
    args = parser.parse_args(argv)
    try:
        validate_params(load_params(args.params))
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
    print(f"{args.params}: every section and key is valid")


if __name__ == "__main__":
    main()
