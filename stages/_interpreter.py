"""Every stage runs with the project's interpreter (`.venv/bin/python`), whichever `python` is on
the PATH of the shell that started `dvc`: imported first by each stage script, it re-executes the
script under the project's virtual environment when another interpreter started it. The project is
the real repository (`$DVC_ROOT`, also from a queued experiment's copy) or the folder above this one.
Without a `.venv` (dualmem installed elsewhere) it does nothing."""

from __future__ import annotations

import os
import sys
from pathlib import Path

REEXEC_FLAG = "DUALMEM_STAGE_REEXEC"


def project_python() -> Path | None:
    for root in (os.environ.get("DVC_ROOT"), Path(__file__).resolve().parents[1]):
        if root and (candidate := Path(root) / ".venv" / "bin" / "python").exists():
            return candidate
    return None


def use_project_python() -> None:
    target = project_python()
    if target is None or os.environ.get(REEXEC_FLAG) == "1":
        return
    if Path(sys.prefix).resolve() == target.parent.parent.resolve():
        return
    os.environ[REEXEC_FLAG] = "1"
    os.execv(str(target), [str(target), *sys.argv])


use_project_python()
