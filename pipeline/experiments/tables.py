"""Plain-text, Markdown and HTML tables of result records and of already formatted cells."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from html import escape
from typing import Any

TABLE_COLUMNS = ("sweep", "run_name", "strategy", "phi", "s", "resolution", "params", "flops", "acts",
                 "top1", "top1_ema", "images_per_s", "gpu_hours")


def _cell(key: str, value: Any) -> str:
    if value is None:
        return "-"
    if key.startswith(("top", "val_top")):  # accuracies: the reported split's and the selection split's
        return f"{100 * value:.1f}%"
    if key in ("params", "flops", "acts"):
        return f"{value / 1e6:.2f}M"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def format_table(records: Iterable[dict[str, Any]], columns: Sequence[str]) -> str:
    """A plain-text table of ``columns`` (accuracies as %, params/flops/acts in millions)."""
    rows = [list(columns)] + [[_cell(c, r.get(c)) for c in columns] for r in records]
    widths = [max(len(row[i]) for row in rows) for i in range(len(columns))]
    lines = ["  ".join(cell.rjust(w) for cell, w in zip(row, widths, strict=True)) for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def markdown_table(headers: Sequence[str], rows: Iterable[Sequence[object]]) -> str:
    """A Markdown (GitHub) table of already formatted cells."""
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    return "\n".join(lines + ["| " + " | ".join(map(str, row)) + " |" for row in rows])


def html_table(headers: Sequence[str], rows: Iterable[Sequence[object]]) -> str:
    """The same table as HTML (cells escaped)."""
    head = "".join(f"<th>{escape(str(h))}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{escape(str(c))}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"
