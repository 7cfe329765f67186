"""Markdown tables of result rows, for the CLI's reports and a run's per-epoch table.

Below :mod:`.training` and :mod:`.results` (both use it), so that neither has to import the other's
module to print a table.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

__all__ = ["markdown_table"]


def _format(value: Any, floatfmt: str) -> str:
    if isinstance(value, float):
        return format(value, floatfmt)
    return str(value)


def markdown_table(
    rows: Sequence[dict[str, Any]],
    columns: Sequence[str] | None = None,
    floatfmt: str = ".4g",
    align: str | None = None,
) -> str:
    """A Markdown table of ``rows`` (dicts; columns: ``columns`` or the first row's keys).

    ``align``: one letter per column, ``l`` (the default for every column) or ``r`` (right-aligned,
    for numbers).

    Example:
        >>> from wnlib.experiments.tables import markdown_table
        >>> print(markdown_table([{"param": "weightnorm", "test error %": 1.23456}], floatfmt=".3g"))
        | param | test error % |
        |---|---|
        | weightnorm | 1.23 |
    """
    if not rows:
        return ""
    columns = list(columns or rows[0])
    align = align or "l" * len(columns)
    if len(align) != len(columns) or set(align) - {"l", "r"}:
        raise ValueError(f"align must be one of 'l' or 'r' per column ({len(columns)}), got {align!r}")
    lines = [
        "| " + " | ".join(columns) + " |",
        "|" + "|".join("---:" if a == "r" else "---" for a in align) + "|",
    ]
    lines += ["| " + " | ".join(_format(row.get(c, ""), floatfmt) for c in columns) + " |" for row in rows]
    return "\n".join(lines)
