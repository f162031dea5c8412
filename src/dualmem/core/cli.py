"""What every stage script shares: argument parsing, the one-line error contract, cleanup, and the
stage's own account of itself.

A stage's `main` raises UserError for bad input; `run_stage` prints it as one line on stderr and
exits with code 2, after removing whatever the stage had started to write (nothing half-written).
Every stage that ends, well or not, leaves `.dualmem/stages/<stage>.json` (wall time, peak memory,
status) for `make bench`; one that fails also marks its pipeline's MLflow parent run FAILED.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from dualmem.core.errors import UserError
from dualmem.core.params import load_params
from dualmem.core.paths import repo_root
from dualmem.core.seeding import set_global_determinism, set_threads


def remove_outputs(outputs: Sequence[Path]) -> None:
    for path in outputs:
        if path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
        elif path.exists():
            path.unlink()


def learner_argument(parser: argparse.ArgumentParser) -> None:
    """`--learner NAME`: the learner a per-learner stage runs for."""
    parser.add_argument("--learner", required=True)


def evaluation_stage(test: str) -> Callable[[argparse.Namespace], str]:
    """The DVC name of the per-learner stage `evaluate_<test>@<learner>`."""
    return lambda args: f"evaluate_{test}@{args.learner}"


def stage_records_dir() -> Path:
    return repo_root() / ".dualmem" / "stages"


def peak_rss_mb() -> float:
    """Peak resident memory of this process and its finished children, in MiB (Linux: ru_maxrss in KiB)."""
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return max(own, children) / 1024


def record_stage(stage: str, status: str, seconds: float) -> None:
    """`.dualmem/stages/<stage>.json`: the latest run of this stage (read by `make bench`)."""
    folder = stage_records_dir()
    folder.mkdir(parents=True, exist_ok=True)
    record = {"stage": stage, "status": status, "wall_seconds": round(seconds, 3),
              "peak_rss_mb": round(peak_rss_mb(), 1), "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    tmp = folder / f".{stage}.{os.getpid()}.tmp"  # queued experiments share this folder: one name each
    tmp.write_text(json.dumps(record, indent=2))
    tmp.replace(folder / f"{stage}.json")


def mark_pipeline_failed(stage: str, reason: str) -> None:
    from dualmem.core.tracking import fail_pipeline

    try:
        fail_pipeline(stage, reason)
    except Exception as exc:  # noqa: BLE001 - the stage's own error is the one to report
        print(f"warning: could not mark the MLflow parent run failed ({type(exc).__name__}: {exc})",
              file=sys.stderr)


def run_stage(
    main: Callable[[dict, argparse.Namespace], None],
    outputs: Callable[[argparse.Namespace], Sequence[Path]],
    configure: Callable[[argparse.ArgumentParser], None] | None = None,
    argv: Sequence[str] | None = None,
    stage: Callable[[argparse.Namespace], str] | str | None = None,
) -> None:
    """Run a stage's `main(params, args)`; `stage` gives its DVC name (default: the script's name),
    available to `main` as `args.stage`."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--params", default="params.yaml", help="params file (default: params.yaml)")
    if configure:
        configure(parser)
    args = parser.parse_args(argv)
    args.stage = stage(args) if callable(stage) else stage or Path(sys.argv[0]).stem
    set_global_determinism()
    start = time.perf_counter()
    try:
        params = load_params(args.params)
        set_threads(params)
        main(params, args)
    except BaseException as exc:
        user_error = isinstance(exc, UserError)
        remove_outputs(outputs(args))
        record_stage(args.stage, "failed", time.perf_counter() - start)
        mark_pipeline_failed(args.stage, str(exc) if user_error else f"{type(exc).__name__}: {exc}")
        if not user_error:
            raise
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
    record_stage(args.stage, "finished", time.perf_counter() - start)
