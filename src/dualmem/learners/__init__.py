"""Learners, one file each, discovered by file name: `learners/<name>.py` defines the learner `<name>`.
Adding a learner is one new file plus its `learners.<name>` section in params.yaml — no registry edit.

Only the learner a stage asks for is imported, so a stage's result depends on that learner's file (and
the shared `learners/common/`), never on its siblings'."""

from __future__ import annotations

import importlib
from functools import cache
from pathlib import Path

from dualmem.errors import ParamsError
from dualmem.learners.common.base import Learner, LearnerContext

PACKAGE_DIR = Path(__file__).parent


def available() -> list[str]:
    """Every learner name: the stems of this package's modules (not `__init__`, not `_private`)."""
    return sorted(p.stem for p in PACKAGE_DIR.glob("*.py") if not p.stem.startswith("_"))


@cache
def learner_class(name: str) -> type[Learner]:
    """The learner class defined in `learners/<name>.py` (the Learner subclass whose `name` is <name>)."""
    if name not in available():
        raise ParamsError("run.learners", f"names unknown learner {name!r}", f"use one of: {', '.join(available())}")
    module = importlib.import_module(f"{__name__}.{name}")
    found = [obj for obj in vars(module).values()
             if isinstance(obj, type) and issubclass(obj, Learner) and getattr(obj, "name", None) == name]
    if len(found) != 1:
        raise TypeError(f"learners/{name}.py must define exactly one Learner subclass with name = {name!r}")
    return found[0]


__all__ = ["Learner", "LearnerContext", "available", "learner_class"]
