"""Learners, one file each, discovered by file name: `learners/<name>.py` defines the learner `<name>`.
Adding a learner is one new file plus its `learners.<name>` section in params.yaml — no registry edit.

Only the learner a stage asks for is imported, so a stage's result depends on that learner's file (and
the shared `learners/common/`), never on its siblings'."""

from __future__ import annotations

from functools import cache
from pathlib import Path

from dualmem.core.discovery import discovered_class, module_names
from dualmem.learners.common.base import Learner, LearnerContext

PACKAGE_DIR = Path(__file__).parent


def available() -> list[str]:
    """Every learner name: the stems of this package's modules (not `__init__`, not `_private`)."""
    return module_names(PACKAGE_DIR)


@cache
def learner_class(name: str) -> type[Learner]:
    """The learner class defined in `learners/<name>.py` (the Learner subclass whose `name` is <name>)."""
    return discovered_class(__name__, PACKAGE_DIR, name, Learner, "run.learners")


__all__ = ["Learner", "LearnerContext", "available", "learner_class"]
