"""Markdown tables of the replay, sweep and fleet reports."""

from __future__ import annotations

from typing import Mapping, Sequence


def cell(value, digits: int = 4) -> str:
    """A figure as a table shows it: n/a for None, floats to `digits` significant digits, a mapping as
    "key value, ..." (none when empty), anything else as str()."""
    if value is None:
        return "n/a"
    if isinstance(value, float):
        return f"{value:.{digits}g}"
    if isinstance(value, Mapping):
        return ", ".join(f"{k} {v}" for k, v in value.items()) or "none"
    return str(value)


def table(header: Sequence[str], rows: Sequence[Sequence]) -> list[str]:
    """The lines of a Markdown table; every cell through `cell` (a str stays as it is)."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return lines + ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
