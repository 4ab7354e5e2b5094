"""``pipeline demo``: a miniature scaling study on the embedded digits, 2-process DDP on CPU, W&B offline.

Compound φ = 0, 1, 2 and fast compound scaling (dWr) at the flops φ = 1 measures, as one scale sweep
(``pipeline.experiments.plan`` → run manifest → ``pipeline fit`` per run, in order), then the report
(``runs/demo/report/report.md|html``) and its headline table. Each run is one ``pipeline fit --config
configs/demo.yaml …`` in its own process (Lightning's DDP launcher re-executes the command line for rank 1,
so it must be the fit command, not this one). A run whose ``result.json`` exists is reused; an interrupted
one resumes from its ``last.ckpt``.
"""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path

from pipeline.errors import PipelineError
from pipeline.experiments.plan import Point, SweepPlan, plan_sweep
from pipeline.experiments.sweep import run_locally, save_plan
from pipeline.experiments.tables import format_table
from pipeline.scaling import STRATEGIES
from pipeline.training.result import read_result

REPO = Path(__file__).resolve().parents[2]
DEMO_CONFIG = REPO / "configs" / "demo.yaml"
SWEEP = "demo"
COLUMNS = ("run_name", "strategy", "phi", "s", "resolution", "params", "flops", "acts", "top1", "top1_ema",
           "epoch_time_s", "fit_time_s")


def parser() -> argparse.ArgumentParser:
    """The argument parser of ``pipeline demo``."""
    p = argparse.ArgumentParser(
        prog="pipeline demo",
        description="Write the digits shards, train compound φ = 0, 1, 2 and dWr at the same flops with 2-process "
                    "DDP on CPU (W&B offline), then write the report and print its headline table.",
        epilog="extra arguments after -- go to every `pipeline fit` (e.g. -- --trainer.limit_train_batches 3)",
    )
    p.add_argument("--out", type=Path, default=Path("runs"), help="run root (runs land in OUT/demo/<run>)")
    p.add_argument("--data", type=Path, default=Path("data/digits"), help="digits shard directory (written if absent)")
    p.add_argument("--phis", type=float, nargs="+", default=[0, 1, 2], help="compound coefficients φ (default 0 1 2)")
    p.add_argument("--match", nargs="*", choices=STRATEGIES, default=["dWr"], metavar="S",
                   help="strategies trained at the measured flops of the --match-at φ (default dWr; none: --match)")
    p.add_argument("--match-at", type=float, nargs="+", metavar="PHI",
                   help="the φ whose measured flops the --match strategies are trained at (default: the smallest "
                        "φ > 0 of --phis)")
    p.add_argument("--epochs", type=int, help="epochs per run (default: configs/demo.yaml's)")
    p.add_argument("--config", type=Path, default=DEMO_CONFIG, help="fit config (default configs/demo.yaml)")
    return p


def demo_plan(args: argparse.Namespace, overrides: list[str]) -> SweepPlan:
    """Compound φ points, then each matched strategy at the flops factor each --match-at φ measured (bisection on s)."""
    compound = [Point({"phi": phi}) for phi in args.phis]
    plan = plan_sweep("scale", SWEEP, str(args.config), overrides, compound)
    growths = [run.flops / plan.base_flops for run in plan.runs if run.spec.phi in args.match_at]
    matched = [Point({"strategy": st, "scale": round(g, 2)}, match_flops=True) for st in args.match for g in growths]
    return plan_sweep("scale", SWEEP, str(args.config), overrides, compound + matched) if matched else plan


def ensure_digits(root: Path) -> None:
    """Write the embedded digits shards to ``root`` unless its manifest is already there."""
    if (root / "manifest.json").is_file():
        print(f"digits shards: {root} (already written)")
        return
    from pipeline.data.sharding import write_shards
    from pipeline.data.sources import get_source

    manifest = write_shards(get_source("digits", None), root)
    print(f"digits shards: {root} ({manifest.num_classes} classes, written)")


def main(argv: list[str]) -> int:
    """Entry point: ``argv[0]`` is the command name."""
    from pipeline.experiments import report

    rest = argv[1:]
    extra = rest[rest.index("--") + 1:] if "--" in rest else []
    args = parser().parse_args(rest[: len(rest) - len(extra) - (1 if "--" in rest else 0)])
    if not args.config.is_file():
        raise PipelineError(f"demo config {args.config} not found; pass --config PATH")
    if args.epochs is not None and args.epochs < 1:
        raise PipelineError(f"--epochs must be >= 1 (got {args.epochs})")
    if args.match_at is None:
        args.match_at = sorted(phi for phi in args.phis if phi > 0)[:1]
    missing = sorted(set(args.match_at) - set(args.phis))
    if missing:
        raise PipelineError(f"--match-at {' '.join(f'{m:g}' for m in missing)} is not among --phis")
    logging.basicConfig(level=logging.WARNING)
    started = time.perf_counter()
    ensure_digits(args.data)
    overrides = ["--data.root", str(args.data), "--run.root", str(args.out)]
    overrides += ["--trainer.max_epochs", str(args.epochs)] if args.epochs is not None else []
    plan = demo_plan(args, overrides + extra)
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
