"""``pipeline demo``: a miniature scaling study on the embedded digits, 2-process DDP on CPU, W&B offline.

The study (its plan, the digits shards) is ``pipeline.experiments.demo``'s; this module parses the arguments,
trains the runs locally, then prints their table and writes the report (``pipeline report``).
"""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path

from pipeline.arguments import OneLineParser, count
from pipeline.commands import report
from pipeline.errors import PipelineError
from pipeline.experiments.demo import COLUMNS, DEMO_CONFIG, demo_plan, ensure_digits
from pipeline.experiments.plan import save_plan, with_seeds
from pipeline.experiments.runner import run_locally
from pipeline.experiments.tables import format_table
from pipeline.scaling import STRATEGIES
from pipeline.training.result import read_result


def parser() -> argparse.ArgumentParser:
    """The argument parser of ``pipeline demo``."""
    p = OneLineParser(
        prog="pipeline demo",
        description="Write the digits shards, train compound φ = 0, 1, 2 and dWr at the same flops with 2-process "
                    "DDP on CPU (W&B offline), then write the report and print its headline table. Each run selects "
                    "its checkpoint on the digits' val split and reports that checkpoint on the test split.",
        epilog="extra arguments after -- go to every `pipeline fit` (e.g. -- --trainer.limit_train_batches 3)",
    )
    p.add_argument("--out", type=Path, default=Path("runs"), help="run root (runs land in OUT/demo/<run>)")
    p.add_argument("--data", type=Path, default=Path("data/digits"), help="digits shard directory (written if absent)")
    p.add_argument("--phis", type=float, nargs="+", default=[0, 1, 2], help="compound coefficients φ (default 0 1 2)")
    p.add_argument("--match", nargs="*", choices=STRATEGIES, default=["dWr"], metavar="S",
                   help="strategies trained at the measured flops of the --match-at φ (default dWr; none: --match)")
    p.add_argument("--match-at", type=float, nargs="+", metavar="PHI",
                   help="the φ whose measured flops the --match strategies are trained at (default: the largest "
                        "φ of --phis; at the demo's 32 px no pycls-rounded dWr net builds φ = 1's flops: the "
                        "last feature map jumps from 1 to 2 px)")
    p.add_argument("--seeds", type=count, default=1,
                   help="runs per point, seeds 0..N−1, named <point>-seed<k> (default 1: the 10-minute budget on 2 "
                        "cores; 2 takes about twice as long); the report then gives mean ± s.d. per point")
    p.add_argument("--epochs", type=int, help="epochs per run (default: configs/demo.yaml's)")
    p.add_argument("--config", type=Path, default=DEMO_CONFIG, help="fit config (default configs/demo.yaml)")
    return p


def main(argv: list[str]) -> int:
    """Entry point: ``argv[0]`` is the command name."""
    rest = argv[1:]
    extra = rest[rest.index("--") + 1:] if "--" in rest else []
    args = parser().parse_args(rest[: len(rest) - len(extra) - (1 if "--" in rest else 0)])
    if not args.config.is_file():
        raise PipelineError(f"demo config {args.config} not found; pass --config PATH")
    if args.epochs is not None and args.epochs < 1:
        raise PipelineError(f"--epochs must be >= 1 (got {args.epochs})")
    if args.match_at is None:
        args.match_at = sorted(phi for phi in args.phis if phi > 0)[-1:]
    missing = sorted(set(args.match_at) - set(args.phis))
    if missing:
        raise PipelineError(f"--match-at {' '.join(f'{m:g}' for m in missing)} is not among --phis")
    logging.basicConfig(level=logging.WARNING)
    started = time.perf_counter()
    ensure_digits(args.data)
    overrides = ["--data.root", str(args.data), "--run.root", str(args.out)]
    overrides += ["--trainer.max_epochs", str(args.epochs)] if args.epochs is not None else []
    plan = with_seeds(demo_plan(args.config, args.phis, args.match, args.match_at, overrides + extra), args.seeds)
    failed = run_locally(save_plan(plan), plan.directory / "logs")
    if failed:
        raise PipelineError(f"{', '.join(failed)} failed; see {plan.directory / 'logs'} (run the demo again to retry)")
    records = [read_result(entry.run_dir) for entry in plan.manifest()]
    print()
    print(format_table([r for r in records if r], COLUMNS))
    print()
    report.main(["report", str(plan.directory)])
    print(f"\nruns: {plan.directory}/<run>/ (config.yaml, checkpoints/, metrics.csv, result.json, wandb/)")
    print(f"W&B (offline): wandb sync {plan.directory}/*/wandb/offline-run-*   (once logged in)")
    print(f"total wall time: {time.perf_counter() - started:.0f} s")
    return 0
