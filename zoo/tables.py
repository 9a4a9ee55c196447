"""Plain-text table helpers shared by every command that prints a table (bench, check, matrix, eval)."""

from __future__ import annotations

__all__ = ["format_cell"]


def format_cell(value, spec: str, empty: str = "-") -> str:
    """A table cell: ``value`` formatted with ``spec`` (e.g. ".2f"), or ``empty`` when unknown."""
    return empty if value is None else format(value, spec)
