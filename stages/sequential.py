"""DVC stage `sequential@<learner>-<stream>` (wake): the learner learns the stream task after task,
for every seed, and its state is saved after each task. Logs wall time and training throughput
(samples per second, replayed samples included) beside a bare PyTorch loop's on the same network."""

from __future__ import annotations

import _interpreter  # noqa: F401  (first: re-executes under the project's .venv if needed)
import argparse
import time

from tqdm import tqdm

from dualmem.core import paths
from dualmem.core.cli import run_stage
from dualmem.core.tracking import StageTracker
from dualmem.data.splits import STREAMS
from dualmem.runner import (
    build_learner,
    learner_config,
    learner_section,
    memory_budget,
    open_stream,
    prepared_dataset,
    save_state,
    stream_seeds,
)
from dualmem.throughput import bare_samples_per_second


def main(params: dict, args: argparse.Namespace) -> None:
    section = learner_section(params, args.learner)
    learner_config(params, args.learner)  # every value of learners.<name> checked before any work
    memory_budget(params)
    seeds = stream_seeds(params, args.stream)
    prepared_dataset()
    tracker = StageTracker(args.stage, params)
    bare = None
    for seed in seeds:
        stream = open_stream(params, args.stream, seed)
        learner = build_learner(params, args.learner, stream)
        seconds, items = [], []
        for task in tqdm(stream.tasks(), total=stream.n_tasks, desc=f"{args.learner} seed {seed}"):
            start = time.perf_counter()
            learner.learn_task(task)
            seconds.append(time.perf_counter() - start)
            items.append(learner.memory_cost()["items"])
            save_state(learner, paths.wake_state_path(args.stream, args.learner, seed, task.index))
        metrics = {"wake_seconds": sum(seconds)}
        if learner.samples_trained:
            bare = bare or bare_samples_per_second(learner.ctx.encoder, stream.n_classes, learner.batch_size)
            sps = learner.samples_trained / sum(seconds)
            metrics |= {"samples_per_second": sps, "bare_loop_samples_per_second": bare,
                        "throughput_vs_bare_loop": sps / bare}
        tracker.add_run(f"wake/{args.stream}", args.learner, seed,
                        {args.learner: dict(section.data), "memory": params["memory"]}, metrics,
                        {"task_seconds": seconds, "stored_items": items}, stream=args.stream)
    tracker.flush()


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--learner", required=True)
    parser.add_argument("--stream", choices=STREAMS, required=True)


if __name__ == "__main__":
    run_stage(main, lambda args: [paths.wake_dir(args.stream, args.learner)], configure,
              stage=lambda args: f"sequential@{args.learner}-{args.stream}")
