"""``pipeline results [ROOT…]``: a table of the finished runs' result records."""

from __future__ import annotations

import argparse
from pathlib import Path

from pipeline.errors import PipelineError
from pipeline.experiments.tables import TABLE_COLUMNS, format_table
from pipeline.training.result import read_results


def main(argv: list[str]) -> int:
    """``pipeline results [ROOT…]``: a table of every finished run under ROOT (default ``runs``)."""
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
