"""Building learners and moving their states between stages (wake -> sleep -> evaluation)."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Any

import torch

from dualmem.core import paths
from dualmem.core.errors import DataError, ParamsError
from dualmem.core.integrity import read_checked, rerun_fix, write_checked
from dualmem.core.params import Section
from dualmem.data.prepared import load_dataset, prepared_file
from dualmem.data.sources import Dataset
from dualmem.data.splits import read_manifest, stream_seeds  # noqa: F401 (stages take it from here)
from dualmem.data.stream import Stream
from dualmem.encoders import load_encoder
from dualmem.learners import Learner, LearnerContext, available, learner_class
from dualmem.learners.common.base import check_unrevealed


def learner_names(params: dict) -> list[str]:
    return Section.of(params, "run").names("learners", available())


def learner_section(params: dict, name: str) -> Section:
    learner_class(name)  # an unknown name fails here, naming run.learners
    return Section.of(params, f"learners.{name}")


def learner_config(params: dict, name: str) -> object:
    """The validated config of learners.<name> (parsed once per stage)."""
    return learner_class(name).parse(learner_section(params, name))


def memory_budget(params: dict) -> int | None:
    """memory.budget_bytes: the bytes every learner that stores items may fill (None = unbounded)."""
    return Section.of(params, "memory").optional_integer("budget_bytes", 1)


def sleeping_learners(params: dict) -> list[str]:
    """consolidate.learners: the learners that get a consolidate (sleep) stage."""
    names = Section.of(params, "consolidate").names("learners", available(), allow_empty=True)
    for name in names:
        if not learner_class(name).has_sleep:
            raise ParamsError("consolidate.learners", f"names {name!r}, which has no sleep phase",
                              "list only learners with a sleep phase (e.g. dualmem)")
    return names


@lru_cache(maxsize=1)
def prepared_dataset() -> Dataset:
    """The prepared main dataset (loaded once per process). Stages call it first, so a missing
    input fails before any work starts."""
    return load_dataset(prepared_file("main"))


def open_stream(params: dict, name: str, seed: int) -> Stream:
    del params  # the prepared data already reflects the data params
    return Stream(prepared_dataset(), read_manifest(seed), name)


def build_learner(params: dict, name: str, stream: Stream) -> Learner:
    encoder, _ = load_encoder(paths.encoder_path(stream.name, stream.seed))
    ctx = LearnerContext(encoder, stream.n_classes, stream.seed, stream.x_train, memory_budget(params))
    return learner_class(name)(learner_config(params, name), ctx)


def save_state(learner: Learner, path: Path) -> None:
    """The learner's state at `path`, and its sha256 beside it."""
    payload = {"learner": learner.name, "state": learner.state_dict(), "memory": learner.memory_cost()}
    write_checked(path, lambda out: torch.save(payload, out))


def final_state_path(name: str, stream: str, seed: int, task: int) -> Path:
    """The state after task `task`: consolidated for learners with a sleep phase, wake otherwise."""
    if learner_class(name).has_sleep:
        return paths.sleep_state_path(stream, name, seed, task)
    return paths.wake_state_path(stream, name, seed, task)


def post_stream_learner(params: dict, name: str, stream: Stream) -> tuple[Learner, dict[str, int]]:
    """The learner `name` in its state after the whole stream, checked to know no held-out class yet,
    and its memory cost."""
    learner = build_learner(params, name, stream)
    memory = load_learner_state(learner, final_state_path(name, stream.name, stream.seed, stream.n_tasks - 1))
    check_unrevealed(learner, stream.held_out)
    return learner, memory


def state_stage(path: Path) -> str:
    """The DVC stage that writes the learner state at `path`
    (models/<stream>/<learner>/<wake|sleep>/seed_<s>/task_<t>.pt)."""
    phase_dir = path.parent.parent
    stage = {"wake": "sequential", "sleep": "consolidate"}.get(phase_dir.name)
    if stage is None:
        return f"<the sequential/consolidate stage that writes {phase_dir}>"
    return f"{stage}@{phase_dir.parent.name}-{phase_dir.parent.parent.name}"


def read_state(path: Path) -> dict[str, Any]:
    if not path.exists():
        raise DataError(f"learner state {path} is missing; fix: run `dvc repro` (sequential/consolidate)")
    return torch.load(read_checked(path, rerun_fix(state_stage(path))), weights_only=False)


def load_learner_state(learner: Learner, path: Path) -> dict[str, int]:
    payload = read_state(path)
    learner.load_state_dict(payload["state"])
    return payload["memory"]
