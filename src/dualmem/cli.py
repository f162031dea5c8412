"""What every stage script shares: argument parsing, the one-line error contract, and cleanup.

A stage's `main` raises UserError for bad input; `run_stage` prints it as one line on stderr and
exits with code 2, after removing whatever the stage had started to write (nothing half-written).
"""

from __future__ import annotations

import argparse
import shutil
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from dualmem.errors import UserError
from dualmem.params import load_params
from dualmem.seeding import set_global_determinism


def remove_outputs(outputs: Sequence[Path]) -> None:
    for path in outputs:
        if path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
        elif path.exists():
            path.unlink()


def learner_argument(parser: argparse.ArgumentParser) -> None:
    """`--learner NAME`: the learner a per-learner stage runs for."""
    parser.add_argument("--learner", required=True)


def run_stage(
    main: Callable[[dict, argparse.Namespace], None],
    outputs: Callable[[argparse.Namespace], Sequence[Path]],
    configure: Callable[[argparse.ArgumentParser], None] | None = None,
    argv: Sequence[str] | None = None,
) -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--params", default="params.yaml", help="params file (default: params.yaml)")
    if configure:
        configure(parser)
    args = parser.parse_args(argv)
    set_global_determinism()
    try:
        params = load_params(args.params)
        main(params, args)
    except UserError as exc:
        remove_outputs(outputs(args))
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
    except BaseException:
        remove_outputs(outputs(args))
        raise
