"""Running a saved sweep plan: locally (one ``pipeline fit`` subprocess per pending run, in order) or as one
SLURM job array (``pipeline submit --manifest``), and the table of its runs with their state.

A run is done when it has a ``result.json``; one with a ``last.ckpt`` resumes from it.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from pipeline.cluster.launch import run_dir_overrides
from pipeline.cluster.run_manifest import RunEntry
from pipeline.experiments.plan import SweepPlan
from pipeline.training.result import RESULT_FILE, read_result
from pipeline.training.rundir import CHECKPOINT_DIR, LAST


def last_checkpoint(entry: RunEntry) -> Path | None:
    """The entry's ``last.ckpt`` if it has one (then its run resumes from it)."""
    last = Path(entry.run_dir) / CHECKPOINT_DIR / f"{LAST}.ckpt"
    return last if last.is_file() else None


def plan_table(plan: SweepPlan) -> str:
    """Every planned run with its spec, complexity, measured vs nominal flops factor, and state; a grid's runs
    with their nominal α, β, γ, the φ′ trained and the candidates' labels."""
    from pipeline.experiments.tables import format_table

    rows = []
    for run in plan.runs:
        record = run.record(plan.base_flops)
        state = "done" if run.entry.finished() else ("resume" if last_checkpoint(run.entry) else "todo")
        rows.append({**record, "×flops": record["flops_growth"], "nominal": record["nominal_growth"],
                     "measured/nominal": record["flops_vs_nominal"], "state": state, "φ′": record["phi"],
                     "labels": ",".join(record.get("labels", []))})
    if plan.kind == "grid":
        return format_table(rows, ("run_name", "alpha", "beta", "gamma", "φ′", "d", "w", "resolution", "params",
                                   "flops", "acts", "×flops", "nominal", "measured/nominal", "state", "labels"))
    return format_table(rows, ("run_name", "strategy", "d", "w", "resolution", "params", "flops", "acts",
                               "×flops", "nominal", "measured/nominal", "state"))


def fit_command(entry: RunEntry) -> list[str]:
    """The ``pipeline fit`` command of one manifest entry (as the array launcher builds it, minus srun);
    ``--ckpt_path last`` where a checkpoint exists, so an interrupted run resumes instead of starting over."""
    cmd = [sys.executable, "-m", "pipeline.cli", "fit", "--config", entry.config, *entry.overrides,
           *run_dir_overrides(Path(entry.run_dir))]
    return cmd + (["--ckpt_path", "last"] if last_checkpoint(entry) else [])


def run_locally(entries: list[RunEntry], logs: Path) -> list[str]:
    """Train every pending entry in order, one ``pipeline fit`` subprocess each; return the failed run names."""
    logs.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    failed = []
    for i, entry in enumerate(entries, 1):
        name = Path(entry.run_dir).name
        if entry.finished():
            print(f"[{i}/{len(entries)}] {name}: already done ({RESULT_FILE})", flush=True)
            continue
        log = logs / f"{name}.log"
        how = "resuming from last.ckpt" if last_checkpoint(entry) else "training"
        print(f"[{i}/{len(entries)}] {name}: {how} … (log {log})", flush=True)
        started = time.perf_counter()
        with log.open("a") as f:
            done = subprocess.run(fit_command(entry), stdout=f, stderr=subprocess.STDOUT, env=env)
        record = read_result(entry.run_dir)
        if done.returncode != 0 or record is None:
            tail = (log.read_text().strip().splitlines() or ["(empty log)"])[-1]
            print(f"[{i}/{len(entries)}] {name}: FAILED (exit {done.returncode}): {tail}", file=sys.stderr, flush=True)
            failed.append(name)
            continue
        print(f"[{i}/{len(entries)}] {name}: top-1 {100 * record['top1']:.1f}% in "
              f"{time.perf_counter() - started:.0f} s", flush=True)
    return failed
