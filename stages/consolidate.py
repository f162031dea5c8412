"""DVC stage `consolidate@<learner>-<stream>` (sleep): after each task, the learner's slow memory
is consolidated from its wake state (for dualmem: replay from the episodic memory into the semantic
memory). Only learners with a sleep phase have this stage."""

from __future__ import annotations

import _interpreter  # noqa: F401  (first: re-executes under the project's .venv if needed)
import argparse
import time

from tqdm import tqdm

from dualmem.core import paths
from dualmem.core.cli import run_stage
from dualmem.core.errors import ParamsError
from dualmem.core.tracking import StageTracker
from dualmem.data.splits import STREAMS
from dualmem.runner import (
    build_learner,
    learner_config,
    learner_names,
    learner_section,
    open_stream,
    prepared_dataset,
    read_state,
    save_state,
    sleeping_learners,
    stream_seeds,
)


def main(params: dict, args: argparse.Namespace) -> None:
    if args.learner not in sleeping_learners(params):
        raise ParamsError("consolidate.learners", f"does not list {args.learner!r}",
                          "run consolidate only for learners listed there")
    if args.learner not in learner_names(params):
        raise ParamsError("consolidate.learners", f"names {args.learner!r}, which run.learners does not run",
                          "list only learners that run.learners also lists")
    learner_config(params, args.learner)
    section = learner_section(params, args.learner)
    seeds = stream_seeds(params, args.stream)
    prepared_dataset()
    tracker = StageTracker(args.stage, params)
    for seed in seeds:
        stream = open_stream(params, args.stream, seed)
        learner = build_learner(params, args.learner, stream)
        slept = None
        seconds = []
        for index in tqdm(range(stream.n_tasks), desc=f"sleep {args.learner} seed {seed}"):
            wake = read_state(paths.wake_state_path(args.stream, args.learner, seed, index))["state"]
            learner.load_state_dict(learner.wake_state_after_sleep(wake, slept))
            start = time.perf_counter()
            learner.sleep(stream.task(index))
            seconds.append(time.perf_counter() - start)
            save_state(learner, paths.sleep_state_path(args.stream, args.learner, seed, index))
            slept = learner.state_dict()
        tracker.add_run(f"sleep/{args.stream}", args.learner, seed, {args.learner: dict(section.data)},
                        {"sleep_seconds": sum(seconds)}, {"task_sleep_seconds": seconds}, stream=args.stream)
    tracker.flush()


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--learner", required=True)
    parser.add_argument("--stream", choices=STREAMS, required=True)


if __name__ == "__main__":
    run_stage(main, lambda args: [paths.sleep_dir(args.stream, args.learner)], configure,
              stage=lambda args: f"consolidate@{args.learner}-{args.stream}")
