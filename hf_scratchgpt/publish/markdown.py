"""Markdown tables: the one writer behind model cards, the run report and every evaluation's results.md.

markdown_table(("task", "accuracy"), [("arc_easy", "0.6120")], align="lr")
metrics_table({"perplexity": 12.3456, "documents": 200})
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


def metrics_table(metrics: dict[str, Any], keys: list[str] | None = None) -> str:
    """A two-column table of the chosen metrics (all of them by default); floats to 4 significant digits."""
    shown = [key for key in keys or list(metrics) if key in metrics]
    rows = [
        (key, f"{metrics[key]:.4g}" if isinstance(metrics[key], float) else metrics[key]) for key in shown
    ]
    return markdown_table(("metric", "value"), rows)


__all__ = ["markdown_table", "metrics_table"]
