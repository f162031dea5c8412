"""Each learner's training throughput against a bare PyTorch loop doing the same sample-steps in the
same process (`dualmem.throughput`): the learner learns the first `tasks` tasks of the class-
incremental stream (seed `seed`, from the prepared data and trained encoder of the last `dvc repro`),
counting every sample through a training step, replayed ones included. The ratio holds on a noisy
machine better than either number alone. Learners that take no gradient step report time only."""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass

from tqdm import tqdm

from dualmem.runner import build_learner, open_stream
from dualmem.throughput import bare_samples_per_second


@dataclass(frozen=True)
class ThroughputRow:
    learner: str
    tasks: int
    seconds: float
    samples: int
    samples_per_second: float | None
    bare_samples_per_second: float | None
    ratio: float | None

    def as_dict(self) -> dict:
        return asdict(self)


def learner_throughput(params: dict, name: str, tasks: int = 2, seed: int = 0) -> ThroughputRow:
    stream = open_stream(params, "continual", seed)
    learner = build_learner(params, name, stream)
    start = time.perf_counter()
    for task in list(stream.tasks())[:tasks]:
        learner.learn_task(task)
    seconds = time.perf_counter() - start
    if not learner.samples_trained:
        return ThroughputRow(name, tasks, seconds, 0, None, None, None)
    sps = learner.samples_trained / seconds
    bare = bare_samples_per_second(learner.ctx.encoder, stream.n_classes, learner.batch_size)
    return ThroughputRow(name, tasks, seconds, learner.samples_trained, sps, bare, sps / bare)


def throughput_bench(params: dict, learners: list[str], tasks: int, progress: bool = True) -> list[ThroughputRow]:
    return [learner_throughput(params, name, tasks) for name in tqdm(learners, desc="throughput", disable=not progress)]
