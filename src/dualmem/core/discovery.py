"""Classes discovered by file name: `<package>/<name>.py` defines the class `<name>` (learners of Tests
1–5 in `dualmem.learners`, text learners of Test 6 in `dualmem.lm.learners`). Only the module asked for
is imported, so a stage's result depends on that file, never on its siblings'."""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import TypeVar

from dualmem.core.errors import ParamsError

T = TypeVar("T")


def module_names(directory: Path) -> list[str]:
    """The stems of a package's modules (not `__init__`, not `_private`), sorted."""
    return sorted(p.stem for p in directory.glob("*.py") if not p.stem.startswith("_"))


def discovered_class(package: str, directory: Path, name: str, base: type[T], listed_in: str) -> type[T]:
    """The one `base` subclass with `name = <name>` in `<package>.<name>`; an unknown name fails naming the
    params key `listed_in` that holds it."""
    names = module_names(directory)
    if name not in names:
        raise ParamsError(listed_in, f"names unknown learner {name!r}", f"use one of: {', '.join(names)}")
    module = importlib.import_module(f"{package}.{name}")
    found = [obj for obj in vars(module).values()
             if isinstance(obj, type) and issubclass(obj, base) and getattr(obj, "name", None) == name]
    if len(found) != 1:
        raise TypeError(f"{directory.name}/{name}.py must define exactly one {base.__name__} with name = {name!r}")
    return found[0]
