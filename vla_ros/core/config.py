"""Typed reading of YAML config sections with one-line errors naming file and field.

A schema library (pydantic, jsonschema) would add a dependency and multi-line error dumps; the configs are small
and the errors must be a single line naming the file and the dotted field, so this reader stays hand-written.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Mapping

import yaml

from vla_ros.core.errors import ConfigError

_MISSING = object()


def load_yaml(path: Path) -> dict:
    """Read a YAML mapping, raising ConfigError for a missing, unreadable or malformed file."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(path, "", "file not found")
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(path, "", f"cannot read: {exc}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ConfigError(path, "", f"malformed YAML: {where}{problem}") from None
    if not isinstance(data, dict):
        raise ConfigError(path, "", f"expected a YAML mapping at the top level, got {type(data).__name__}")
    return data


def load_json(path: Path) -> dict:
    """Read a JSON object, raising ConfigError for a missing, unreadable or malformed file."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(path, "", "file not found")
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ConfigError(path, "", f"cannot read JSON: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError(path, "", f"expected a JSON object, got {type(data).__name__}")
    return data


class Section:
    """A mapping from a config file with typed accessors; `field` is the dotted path used in errors."""

    def __init__(self, data: Any, source: Path | str, field: str = ""):
        if not isinstance(data, Mapping):
            raise ConfigError(source, field or "<top>", f"expected a mapping, got {type(data).__name__}")
        self.data, self.source, self.field = data, source, field

    def _path(self, key: str | int) -> str:
        if isinstance(key, int):
            return f"{self.field}[{key}]"
        return f"{self.field}.{key}" if self.field else key

    def error(self, key: str | int, problem: str) -> ConfigError:
        return ConfigError(self.source, self._path(key), problem)

    def has(self, key: str) -> bool:
        return self.data.get(key) is not None

    def raw(self, key: str, default: Any = _MISSING) -> Any:
        value = self.data.get(key)
        if value is None:
            if default is _MISSING:
                raise self.error(key, "missing (required)")
            return default
        return value

    def section(self, key: str, default: Any = _MISSING) -> "Section":
        return Section(self.raw(key, default), self.source, self._path(key))

    def sections(self, key: str, default: Any = _MISSING) -> list["Section"]:
        items = self.raw(key, default)
        if not isinstance(items, list):
            raise self.error(key, f"expected a list, got {type(items).__name__}")
        return [Section(item, self.source, f"{self._path(key)}[{i}]") for i, item in enumerate(items)]

    def str(self, key: str, default: Any = _MISSING) -> str | None:
        value = self.raw(key, default)
        if value is None:  # absent and the caller's default is None
            return None
        if not isinstance(value, str):
            raise self.error(key, f"expected a string, got {type(value).__name__} {value!r}")
        return value

    def float(self, key: str, default: Any = _MISSING, positive: bool = False) -> float | None:
        value = self.raw(key, default)
        return None if value is None else self.as_float(key, value, positive)

    def as_float(self, key: str | int, value: Any, positive: bool = False) -> float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise self.error(key, f"expected a number, got {type(value).__name__} {value!r}")
        value = float(value)
        if not math.isfinite(value):
            raise self.error(key, f"expected a finite number, got {value!r}")
        if positive and value <= 0:
            raise self.error(key, f"expected a positive number, got {value!r}")
        return value

    def floats(self, key: str, length: int | None = None, default: Any = _MISSING) -> list[float]:
        values = self.raw(key, default)
        if not isinstance(values, list):
            raise self.error(key, f"expected a list of numbers, got {type(values).__name__} {values!r}")
        if length is not None and len(values) != length:
            raise self.error(key, f"expected {length} numbers, got {len(values)}")
        return [Section(self.data, self.source, self._path(key)).as_float(i, v) for i, v in enumerate(values)]

    def strs(self, key: str, default: Any = _MISSING) -> list[str]:
        values = self.raw(key, default)
        if not isinstance(values, list) or not all(isinstance(v, str) for v in values):
            raise self.error(key, f"expected a list of strings, got {values!r}")
        return list(values)

    def choice(self, key: str, choices: tuple[str, ...], default: Any = _MISSING) -> str:
        value = self.str(key, default)
        if value not in choices:
            raise self.error(key, f"expected one of {', '.join(choices)}, got {value!r}")
        return value

    def path(self, key: str, default: Any = _MISSING) -> Path:
        """A file path, relative paths resolved against the config file's directory."""
        value = Path(self.str(key, default)).expanduser()
        return value if value.is_absolute() else (Path(self.source).parent / value).resolve()

    def unknown_keys(self, allowed: set[str]) -> None:
        extra = sorted(set(self.data) - allowed)
        if extra:
            raise self.error(extra[0], f"unknown key; expected one of {', '.join(sorted(allowed))}")
