"""Markdown tables, as the reports (``simulate``, ``demo``, ``make bench``) write them."""

from __future__ import annotations

from collections.abc import Iterable, Sequence


def table(header: Sequence[str], rows: Iterable[Sequence[object]], align: str = "") -> list[str]:
    """A Markdown table's lines. ``align``: ``l`` or ``r`` per column (default: left-aligned
    throughout). A ``|`` inside a cell is escaped, so a cell cannot split the row."""
    rule = ["---:" if a == "r" else "---" for a in (align or "l" * len(header))]
    lines = ["| " + " | ".join(header) + " |", "| " + " | ".join(rule) + " |"]
    lines += ["| " + " | ".join(str(cell).replace("|", "\\|") for cell in row) + " |" for row in rows]
    return lines
