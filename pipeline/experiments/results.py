"""The result record store: one ``result.json`` per finished run (its presence = done), and tables of them."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from pipeline.errors import PipelineError
from pipeline.io import atomic_write_json

RESULT_FILE = "result.json"

# design.md's record; ``phi`` / ``s`` and the transfer fields are None where they do not apply.
RESULT_KEYS = (
    "run_name", "sweep", "strategy", "phi", "s", "alpha", "beta", "gamma", "fast_alpha", "d", "w", "r",
    "resolution", "dataset", "source_run", "params", "flops", "acts", "top1", "top5", "top1_ema", "top5_ema",
    "images_per_s", "epoch_time_s", "wall_time_s", "gpu_hours", "world_size", "wandb_run_id", "git_commit",
)


def git_commit(path: str | Path = ".") -> str | None:
    """The commit checked out at ``path`` (with ``-dirty`` if the tree has changes), or None outside git."""
    try:
        head = subprocess.run(["git", "-C", str(path), "rev-parse", "HEAD"], capture_output=True, text=True,
                              check=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(path), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, check=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return f"{head}-dirty" if dirty else head


def write_result(run_dir: str | Path, record: dict[str, Any]) -> Path:
    """Write ``record`` atomically as ``run_dir/result.json``; every key of RESULT_KEYS must be present."""
    missing = [k for k in RESULT_KEYS if k not in record]
    if missing:
        raise PipelineError(f"result record lacks {', '.join(missing)}")
    return atomic_write_json(Path(run_dir) / RESULT_FILE, record)


def read_result(run_dir: str | Path) -> dict[str, Any] | None:
    """The record of the run in ``run_dir``, or None if the run has not finished."""
    path = Path(run_dir) / RESULT_FILE
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise PipelineError(f"{path} is not valid JSON ({err}); delete it to re-run that run") from err


def read_results(root: str | Path) -> list[dict[str, Any]]:
    """Every record under ``root`` (any depth), sorted by sweep and run name."""
    records = [read_result(p.parent) for p in Path(root).rglob(RESULT_FILE)]
    return sorted((r for r in records if r), key=lambda r: (str(r.get("sweep")), str(r.get("run_name"))))


def _cell(key: str, value: Any) -> str:
    if value is None:
        return "-"
    if key.startswith("top"):
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
    from html import escape

    head = "".join(f"<th>{escape(str(h))}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{escape(str(c))}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


TABLE_COLUMNS = ("sweep", "run_name", "strategy", "phi", "s", "resolution", "params", "flops", "acts",
                 "top1", "top1_ema", "images_per_s", "gpu_hours")


def main(argv: list[str]) -> int:
    """``pipeline results [ROOT…]``: a table of every finished run under ROOT (default ``runs``)."""
    import argparse

    p = argparse.ArgumentParser(prog="pipeline results", description="Table of the finished runs' result records.")
    p.add_argument("roots", nargs="*", type=Path, default=[Path("runs")], help="run roots or sweep dirs (default runs)")
    p.add_argument("--columns", nargs="+", default=list(TABLE_COLUMNS), help="record keys to show")
    p.add_argument("--plot", type=Path, help="also write a PNG of top-1 over flops and over activations")
    args = p.parse_args(argv[1:])
    records = [r for root in args.roots for r in read_results(root)]
    if not records:
        raise PipelineError(f"no result.json under {', '.join(map(str, args.roots))}; finished runs write one")
    print(format_table(records, args.columns))
    if args.plot:
        from pipeline.experiments.plots import plot_scaling

        print(f"plot: {plot_scaling(records, args.plot)}")
    return 0


if __name__ == "__main__":
    import sys

    sys.exit(main(["results", *sys.argv[1:]]))
