"""User-facing errors: each one becomes a single line on stderr and exit code 2."""

from __future__ import annotations


class UserError(Exception):
    """Bad input the user can fix (params, data, paths). Never shown with a traceback."""


class ParamsError(UserError):
    def __init__(self, key: str, problem: str, fix: str) -> None:
        super().__init__(f"params: '{key}' {problem}; fix: {fix}")
        self.key = key


class DataError(UserError):
    """A data source is missing or corrupt."""


class LeakageError(RuntimeError):
    """A parameter or memory was about to be fit on a class the protocol has not revealed yet.

    This is a bug in a learner or stage, not a user error, so it keeps its traceback.
    """
