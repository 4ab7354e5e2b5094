"""``pipeline demo``: the embedded demo — digits shards, compound φ = 0, 1, 2 with 2-process DDP on CPU, a table.

Each φ is one ``pipeline fit --config configs/demo.yaml --model.phi φ`` in its own process (Lightning's
DDP launcher re-executes the command line for rank 1, so it must be the fit command, not this one).
A run whose ``result.json`` exists is reused; an interrupted one resumes from its ``last.ckpt``.
"""

from __future__ import annotations

import argparse
import logging
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from pipeline.errors import PipelineError
from pipeline.experiments.plots import plot_scaling
from pipeline.experiments.results import format_table, read_result

REPO = Path(__file__).resolve().parents[2]
DEMO_CONFIG = REPO / "configs" / "demo.yaml"
SWEEP = "demo"
COLUMNS = ("phi", "resolution", "params", "flops", "acts", "top1", "top1_ema", "top5", "fit_time_s", "run_name")


def parser() -> argparse.ArgumentParser:
    """The argument parser of ``pipeline demo``."""
    p = argparse.ArgumentParser(
        prog="pipeline demo",
        description="Write the digits shards, train compound-scaled EfficientNets at each φ with 2-process DDP on "
                    "CPU (W&B offline), print φ / params / flops / acts / top-1 / time.",
        epilog="extra arguments after -- go to every `pipeline fit` (e.g. -- --trainer.limit_train_batches 3)",
    )
    p.add_argument("--out", type=Path, default=Path("runs"), help="run root (runs land in OUT/demo/<run>)")
    p.add_argument("--data", type=Path, default=Path("data/digits"), help="digits shard directory (written if absent)")
    p.add_argument("--phis", type=float, nargs="+", default=[0, 1, 2], help="compound coefficients φ (default 0 1 2)")
    p.add_argument("--epochs", type=int, help="epochs per run (default: configs/demo.yaml's)")
    p.add_argument("--config", type=Path, default=DEMO_CONFIG, help="fit config (default configs/demo.yaml)")
    return p


def ensure_digits(root: Path) -> None:
    """Write the embedded digits shards to ``root`` unless its manifest is already there."""
    if (root / "manifest.json").is_file():
        print(f"digits shards: {root} (already written)")
        return
    from pipeline.data.sharding import write_shards
    from pipeline.data.sources import get_source

    manifest = write_shards(get_source("digits", None), root)
    print(f"digits shards: {root} ({manifest.num_classes} classes, written)")


def fit_command(args: argparse.Namespace, phi: float, extra: list[str]) -> list[str]:
    """The ``pipeline fit`` command line of one φ (resuming from last.ckpt if an earlier attempt left one)."""
    cmd = [sys.executable, "-m", "pipeline.cli", "fit", "--config", str(args.config), "--model.phi", f"{phi:g}",
           "--data.root", str(args.data), "--run.root", str(args.out), "--run.sweep", SWEEP, "--ckpt_path", "last"]
    if args.epochs is not None:
        cmd += ["--trainer.max_epochs", str(args.epochs)]
    return cmd + extra


def main(argv: list[str]) -> int:
    """Entry point: ``argv[0]`` is the command name."""
    rest = argv[1:]
    extra = rest[rest.index("--") + 1:] if "--" in rest else []
    args = parser().parse_args(rest[: len(rest) - len(extra) - (1 if "--" in rest else 0)])
    if not args.config.is_file():
        raise PipelineError(f"demo config {args.config} not found; pass --config PATH")
    if args.epochs is not None and args.epochs < 1:
        raise PipelineError(f"--epochs must be >= 1 (got {args.epochs})")
    logging.basicConfig(level=logging.WARNING)
    started = time.perf_counter()
    ensure_digits(args.data)
    logs = args.out / SWEEP / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    records = []
    for phi in args.phis:
        previous = _find_record(args.out / SWEEP, phi)
        if previous is not None:
            print(f"φ={phi:g}: already done ({previous['run_dir']}; delete it to re-train)")
            records.append(previous)
            continue
        log = logs / f"phi{phi:g}.log"
        print(f"φ={phi:g}: 2-process DDP on CPU … (log: {log})", flush=True)
        t0 = time.perf_counter()
        with log.open("w") as f:
            done = subprocess.run(fit_command(args, phi, extra), stdout=f, stderr=subprocess.STDOUT, env=env)
        if done.returncode != 0:
            tail = log.read_text().strip().splitlines()[-1:] or ["(empty log)"]
            raise PipelineError(f"φ={phi:g} failed (exit {done.returncode}): {tail[0]} — see {log}")
        record = _find_record(args.out / SWEEP, phi)
        if record is None:
            raise PipelineError(f"φ={phi:g} finished without a result.json under {args.out / SWEEP}; see {log}")
        records.append(record)
        print(f"φ={phi:g}: top-1 {100 * record['top1']:.1f}% (EMA {100 * (record['top1_ema'] or 0):.1f}%) "
              f"in {time.perf_counter() - t0:.0f} s", flush=True)
    print()
    print(format_table(records, COLUMNS))
    print(f"\nplot (top-1 over flops and activations): {plot_scaling(records, args.out / SWEEP / 'scaling.png')}")
    print(f"\nruns: {args.out / SWEEP}/<run>/ (config.yaml, checkpoints/, metrics.csv, result.json, wandb/)")
    print(f"W&B (offline): wandb sync {args.out / SWEEP}/*/wandb/offline-run-*   (once logged in)")
    print(f"total wall time: {time.perf_counter() - started:.0f} s")
    return 0


def _find_record(sweep_dir: Path, phi: float) -> dict[str, Any] | None:
    """The finished record of compound φ in ``sweep_dir``, or None."""
    for run in sorted(sweep_dir.iterdir()) if sweep_dir.is_dir() else []:
        record = read_result(run) if run.is_dir() else None
        if record and record.get("strategy") == "compound" and record.get("phi") == phi:
            return record
    return None
