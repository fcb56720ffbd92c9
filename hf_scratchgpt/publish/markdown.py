"""Markdown tables: the one writer behind model cards, the run report and every evaluation's results.md.

markdown_table(("task", "accuracy"), [("arc_easy", "0.6120")], align="lr")
metrics_table({"perplexity": 12.3456, "documents": 200})
format_number(812.5), format_number(23456.7)  # "812.5", "23,457"
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any


def markdown_table(header: Sequence[str], rows: Iterable[Sequence[Any]], align: str | None = None) -> str:
    """A Markdown table, without a final newline. ``align``: one letter per column, ``l`` (the default) or ``r``
    (numbers read best right-aligned). Cells are written with ``str()``: format numbers before."""
    align = align or "l" * len(header)
    if len(align) != len(header) or set(align) - {"l", "r"}:
        raise ValueError(f"align={align!r}: one letter, 'l' or 'r', per column of {list(header)}.")
    lines = ["| " + " | ".join(header) + " |", "|" + "".join("---:|" if a == "r" else "---|" for a in align)]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def is_number(value: Any) -> bool:
    """A JSON number (an int or a float, not a bool): a score a table formats, where text is shown as is."""
    return isinstance(value, int | float) and not isinstance(value, bool)


def format_number(value: float) -> str:
    """A score for a table: 4 significant digits, or a whole number with separators from 10,000 up (a large
    perplexity reads better as 23,457 than as 2.346e+04)."""
    return f"{value:,.0f}" if abs(value) >= 1e4 else f"{value:.4g}"


def metrics_table(metrics: dict[str, Any], keys: list[str] | None = None) -> str:
    """A two-column table of the chosen metrics (all of them by default); floats by `format_number`."""
    shown = [key for key in keys or list(metrics) if key in metrics]
    rows = [
        (key, format_number(metrics[key]) if isinstance(metrics[key], float) else metrics[key])
        for key in shown
    ]
    return markdown_table(("metric", "value"), rows)


__all__ = ["format_number", "is_number", "markdown_table", "metrics_table"]
