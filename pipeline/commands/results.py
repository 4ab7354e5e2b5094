"""``pipeline results [ROOT…]``: a table of the finished runs' result records."""

from __future__ import annotations

import argparse
from pathlib import Path

from pipeline.errors import PipelineError
from pipeline.experiments.tables import format_table
from pipeline.training.result import read_results

# the held-out accuracy a run was selected on beside the reported split's accuracy of the selected checkpoint
COLUMNS = ("sweep", "run_name", "strategy", "phi", "s", "resolution", "params", "flops", "acts",
           "selected_on", "val_top1", "val_top1_ema", "reported_on", "top1", "top1_ema", "images_per_s", "gpu_hours")


def main(argv: list[str]) -> int:
    """``pipeline results [ROOT…]``: a table of every finished run under ROOT (default ``runs``)."""
    p = argparse.ArgumentParser(
        prog="pipeline results", description="Table of the finished runs' result records: val_top1 is the best "
        "accuracy on the split a run selected on (selected_on), top1 that of the selected checkpoint on reported_on.")
    p.add_argument("roots", nargs="*", type=Path, default=[Path("runs")], help="run roots or sweep dirs (default runs)")
    p.add_argument("--columns", nargs="+", default=list(COLUMNS), help="record keys to show")
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
