"""Loading and validating params.yaml.

Every value a user may change lives in params.yaml. Each stage reads the sections it needs through
`Section`, whose typed getters fail with a ParamsError that names the full key and the fix.
"""

from __future__ import annotations

import difflib
import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import MISSING, Field, field, fields, is_dataclass
from pathlib import Path
from types import UnionType
from typing import Any, TypeVar, Union, get_args, get_origin, get_type_hints

import yaml

from dualmem.core.errors import ParamsError

DEFAULT_PARAMS = Path("params.yaml")
T = TypeVar("T")


def load_params(path: Path | str = DEFAULT_PARAMS) -> dict[str, Any]:
    path = Path(path)
    if not path.exists():
        raise ParamsError(str(path), "does not exist", "run from the repository root or pass --params")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        line = getattr(getattr(exc, "problem_mark", None), "line", None)
        where = f" (line {line + 1})" if line is not None else ""
        raise ParamsError(str(path), f"is not valid YAML{where}", "correct the YAML syntax") from None
    if not isinstance(data, dict):
        raise ParamsError(str(path), "must be a mapping of sections", "see the README for the layout")
    return data


def params_hash(params: Mapping[str, Any]) -> str:
    blob = json.dumps(params, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:12]


class KeyAudit:
    """Which keys the parsers read (`read`) and which mappings they read as sections (`sections`):
    what `unread_keys` needs to call every other key of params.yaml unknown."""

    active: list[KeyAudit] = []

    def __init__(self) -> None:
        self.read: set[str] = set()
        self.sections: set[str] = set()

    def __enter__(self) -> KeyAudit:
        KeyAudit.active.append(self)
        return self

    def __exit__(self, *exc: object) -> None:
        KeyAudit.active.remove(self)

    @classmethod
    def note(cls, key: str, section: bool = False) -> None:
        for audit in cls.active:
            (audit.sections if section else audit.read).add(key)

    def unread_keys(self, params: Mapping[str, Any], prefix: str = "") -> list[tuple[str, list[str]]]:
        """(unknown key, the keys read beside it) for every key under a section no parser read."""
        unknown: list[tuple[str, list[str]]] = []
        read_here = [k for k in params if f"{prefix}{k}" in self.read | self.sections]
        for key, value in params.items():
            path = f"{prefix}{key}"
            if path in self.sections and isinstance(value, Mapping):
                unknown += self.unread_keys(value, f"{path}.")
            elif path not in self.read:
                unknown.append((path, [f"{prefix}{k}" for k in read_here]))
        return unknown


class Section:
    """A validated view on one (possibly nested) mapping of params.yaml."""

    def __init__(self, data: Any, prefix: str) -> None:
        if not isinstance(data, Mapping):
            raise ParamsError(prefix, "must be a mapping", f"write '{prefix}:' as a section of keys")
        self.data = data
        self.prefix = prefix
        parts = prefix.split(".")
        for i in range(1, len(parts) + 1):
            KeyAudit.note(".".join(parts[:i]), section=True)

    @classmethod
    def of(cls, params: Mapping[str, Any], key: str) -> Section:
        node: Any = params
        for i, part in enumerate(key.split(".")):
            if not isinstance(node, Mapping) or part not in node:
                missing = ".".join(key.split(".")[: i + 1])
                raise ParamsError(missing, "is missing", "add it to params.yaml (see the README)")
            node = node[part]
        return cls(node, key)

    def key(self, name: str) -> str:
        return f"{self.prefix}.{name}"

    def raw(self, name: str, default: Any = ...) -> Any:
        KeyAudit.note(self.key(name))
        if name not in self.data:
            if default is ...:
                raise ParamsError(self.key(name), "is missing", "add it to params.yaml")
            return default
        return self.data[name]

    def section(self, name: str) -> Section:
        return Section(self.raw(name), self.key(name))

    def integer(self, name: str, minimum: int | None = None, default: Any = ...) -> int:
        value = self.raw(name, default)
        if isinstance(value, bool) or not isinstance(value, int):
            raise ParamsError(self.key(name), f"must be an integer, got {value!r}", "write a whole number")
        if minimum is not None and value < minimum:
            raise ParamsError(self.key(name), f"must be >= {minimum}, got {value}", f"use a value >= {minimum}")
        return value

    def optional_integer(self, name: str, minimum: int | None = None) -> int | None:
        if self.raw(name, None) is None:
            return None
        return self.integer(name, minimum)

    def number(
        self, name: str, minimum: float | None = None, maximum: float | None = None, default: Any = ...
    ) -> float:
        value = self.raw(name, default)
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ParamsError(self.key(name), f"must be a number, got {value!r}", "write a number")
        if minimum is not None and value < minimum:
            raise ParamsError(self.key(name), f"must be >= {minimum}, got {value}", f"use a value >= {minimum}")
        if maximum is not None and value > maximum:
            raise ParamsError(self.key(name), f"must be <= {maximum}, got {value}", f"use a value <= {maximum}")
        return float(value)

    def boolean(self, name: str, default: Any = ...) -> bool:
        value = self.raw(name, default)
        if not isinstance(value, bool):
            raise ParamsError(self.key(name), f"must be true or false, got {value!r}", "write true or false")
        return value

    def string(self, name: str, default: Any = ...) -> str:
        value = self.raw(name, default)
        if not isinstance(value, str) or not value:
            raise ParamsError(self.key(name), f"must be a non-empty string, got {value!r}", "write a name")
        return value

    def choice(self, name: str, options: Iterable[str], default: Any = ...) -> str:
        options = list(options)
        value = self.raw(name, default)
        if value not in options:
            raise ParamsError(
                self.key(name), f"is {value!r}, not one of {options}", f"use one of: {', '.join(options)}"
            )
        return value

    def int_list(self, name: str, minimum: int | None = None, unique: bool = True) -> list[int]:
        value = self.raw(name)
        fix = "write a non-empty list of integers, e.g. [0, 1, 2]"
        if not isinstance(value, list) or not value:
            raise ParamsError(self.key(name), f"must be a non-empty list of integers, got {value!r}", fix)
        for item in value:
            if isinstance(item, bool) or not isinstance(item, int):
                raise ParamsError(self.key(name), f"holds {item!r}, which is not an integer", fix)
            if minimum is not None and item < minimum:
                raise ParamsError(self.key(name), f"holds {item}, below {minimum}", f"use values >= {minimum}")
        if unique and len(set(value)) != len(value):
            raise ParamsError(self.key(name), "holds duplicates", "list each value once")
        return list(value)

    def string_list(self, name: str) -> list[str]:
        """A non-empty list of distinct non-empty strings."""
        value = self.raw(name)
        if not isinstance(value, list) or not value or not all(isinstance(v, str) and v for v in value):
            raise ParamsError(self.key(name), f"must be a non-empty list of names, got {value!r}",
                              "write e.g. [finetune, dualmem]")
        if len(set(value)) != len(value):
            raise ParamsError(self.key(name), "holds duplicates", "list each name once")
        return list(value)

    def names(self, name: str, allowed: Iterable[str], allow_empty: bool = False) -> list[str]:
        allowed = list(allowed)
        value = self.raw(name)
        if allow_empty and value == []:
            return []
        if not isinstance(value, list) or not value:
            raise ParamsError(
                self.key(name), f"must be a non-empty list, got {value!r}", f"list some of: {', '.join(allowed)}"
            )
        for item in value:
            if item not in allowed:
                raise ParamsError(
                    self.key(name), f"names unknown {item!r}", f"use only: {', '.join(allowed)}"
                )
        if len(set(value)) != len(value):
            raise ParamsError(self.key(name), "holds duplicates", "list each name once")
        return list(value)


# -- typed config dataclasses -----------------------------------------------------------------------
def param(default: Any = MISSING, *, minimum: float | None = None, maximum: float | None = None,
          choices: Iterable[str] | None = None) -> Any:
    """A config dataclass field with its validation rule (range or choices) beside its default."""
    meta = {"minimum": minimum, "maximum": maximum, "choices": list(choices) if choices else None}
    return field(default=default, metadata=meta)


def parse_config(cls: type[T], section: Section) -> T:
    """Build and validate the config dataclass `cls` from `section`, once: every key is type- and
    range-checked, a missing key without default and an unknown key fail with a ParamsError that names
    the full key (an unknown one with the nearest valid key)."""
    hints = get_type_hints(cls)
    names = [f.name for f in fields(cls)]  # type: ignore[arg-type]
    for key in section.data:
        if key not in names:
            close = difflib.get_close_matches(str(key), names, n=1)
            hint = f"did you mean '{section.key(close[0])}'?" if close else f"valid keys: {', '.join(names)}"
            raise ParamsError(section.key(str(key)), "is not a known key", f"remove it or rename it; {hint}")
    values = {}
    for f in fields(cls):  # type: ignore[arg-type]
        values[f.name] = _parse_field(section, f, hints[f.name])
    return cls(**values)


def _parse_field(section: Section, f: Field, hint: Any) -> Any:
    default = ... if f.default is MISSING else f.default
    lo, hi, choices = f.metadata.get("minimum"), f.metadata.get("maximum"), f.metadata.get("choices")
    name = f.name
    if is_dataclass(hint):
        if name not in section.data and default is not ...:
            return default
        return parse_config(hint, section.section(name))
    optional = get_origin(hint) in (Union, UnionType) and type(None) in get_args(hint)
    if optional:
        if section.raw(name, default) is None:
            return None
        hint = next(a for a in get_args(hint) if a is not type(None))
    if hint is bool:
        return section.boolean(name, default)
    if hint is int:
        value = section.integer(name, None if lo is None else int(lo), default)
        if hi is not None and value > hi:
            raise ParamsError(section.key(name), f"must be <= {hi}, got {value}", f"use a value <= {hi}")
        return value
    if hint is float:
        return section.number(name, lo, hi, default)
    if hint is str:
        return section.choice(name, choices, default) if choices else section.string(name, default)
    if get_origin(hint) is list and get_args(hint) == (int,):
        return section.int_list(name, None if lo is None else int(lo), unique=False)
    raise TypeError(f"config field {name}: unsupported type {hint!r}")
