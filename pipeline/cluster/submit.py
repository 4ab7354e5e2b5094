"""Submitting to SLURM: every check of a request before ``sbatch`` (again inside the job), then one ``sbatch`` call
(a run through ``slurm/train.sbatch`` or a run manifest as a job array through ``slurm/array.sbatch``).
"""

from __future__ import annotations

import argparse
import os
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

from pipeline.cluster.checks import (
    check_cpus_per_task,
    check_overrides,
    check_scontrol,
    check_shards,
    check_tasks_per_node,
    check_time_limit,
    cpus_needed,
)
from pipeline.cluster.launch import MAX_RETRIES_ENV, resumable_config, run_dir_overrides
from pipeline.cluster.run_manifest import index_ranges, pending, read_manifest
from pipeline.errors import PipelineError
from pipeline.preemption import REQUEUE_ENV, SIGNAL_ENV, parse_signal
from pipeline.training.config import ResolvedRun, resolve_run

SLURM_DIR = Path(__file__).resolve().parents[2] / "slurm"
SETUP_ENV = "CLUSTER_SETUP"  # sourced by slurm/*.sbatch before Python


def check_run(config: str, overrides: list[str]) -> ResolvedRun:
    """Parse ``config`` + ``overrides`` through the training CLI and check its shards are visible."""
    resolved = resolve_run(config, overrides)
    check_shards(resolved)
    return resolved


def submit(args: argparse.Namespace, overrides: list[str]) -> int:
    """Check the request (``pipeline submit``'s parsed options), then ``sbatch`` it (or print the command with
    ``args.dry_run``); print the job id."""
    tasks = args.ntasks_per_node if args.ntasks_per_node is not None else max(args.gpus_per_node, 1)
    if (args.nodes < 1 or args.gpus_per_node < 0 or args.max_parallel < 1 or args.signal_lead < 0
            or args.max_retries < 0 or (args.cpus_per_task is not None and args.cpus_per_task < 1)):
        raise PipelineError("--nodes, --max-parallel and --cpus-per-task must be ≥ 1, --gpus-per-node, "
                            "--signal-lead and --max-retries ≥ 0")
    check_tasks_per_node(tasks, args.gpus_per_node)
    check_overrides(overrides)
    check_time_limit(args.time, args.signal_lead)
    signal = parse_signal(args.signal).name.removeprefix("SIG")
    if not args.no_requeue and not args.dry_run:  # --dry-run only prints: it works where SLURM is not installed
        check_scontrol()
    if args.setup and not Path(args.setup).is_file():
        raise PipelineError(f"--setup {args.setup} not found (the job sources it before Python; relative paths "
                            f"are from {Path.cwd()})")
    if not (SLURM_DIR / "train.sbatch").is_file():
        raise PipelineError(f"{SLURM_DIR}/train.sbatch not found: run pipeline from its repository clone "
                            "(pip install -e .)")
    if not args.dry_run and shutil.which("sbatch") is None:
        raise PipelineError("`sbatch` is not on PATH: submit from a SLURM login node (or use --dry-run)")

    stamp = time.strftime("%Y%m%dT%H%M%S")
    if args.config:
        resolved = check_run(args.config, overrides)
        checked = [resolved]
        script, target, array = "train.sbatch", [args.config], None
        name = args.job_name or resolved.run_dir.name
        log = resolved.run_dir.parent / "slurm-logs" / f"%x-%j-{stamp}.out"
    elif args.resume:
        run = Path(args.resume).resolve()
        checked = [check_run(str(resumable_config(run)), [*overrides, *run_dir_overrides(run)])]
        script, target, array = "train.sbatch", ["--resume", str(run)], None
        name = args.job_name or run.name
        log = run.parent / "slurm-logs" / f"%x-%j-{stamp}.out"
    else:
        runs = read_manifest(args.manifest)
        todo = pending(runs)
        if not todo:
            print(f"pipeline submit: all {len(runs)} runs of {args.manifest} have a result.json; nothing to submit",
                  file=sys.stderr)
            return 0
        checked = [check_run(run.config, [*run.overrides, *overrides, *run_dir_overrides(Path(run.run_dir))])
                   for run in (runs[i] for i in todo)]
        script, target = "array.sbatch", [args.manifest]
        array = f"{index_ranges(todo)}%{args.max_parallel}"
        name = args.job_name or Path(args.manifest).stem
        log = Path(args.manifest).parent / "slurm-logs" / f"%x-%A_%a-{stamp}.out"

    cpus = args.cpus_per_task or max(map(cpus_needed, checked))  # one allocation shape for every array task
    for run in checked:
        check_cpus_per_task(cpus, run)
    cmd = [
        "sbatch", "--parsable", "--export=ALL", f"--job-name={name}", f"--nodes={args.nodes}",
        f"--ntasks-per-node={tasks}", f"--signal={signal}@{args.signal_lead}",
        "--no-requeue" if args.no_requeue else "--requeue", f"--output={log}",
    ]
    cmd += [f"--{key.replace('_', '-')}={value}" for key, value in
            (("gpus_per_node", args.gpus_per_node or None), ("cpus_per_task", cpus),
             ("time", args.time), ("partition", args.partition), ("array", array)) if value]
    cmd += [*args.sbatch_arg, str(SLURM_DIR / script), *target, *overrides]
    env = {"CLUSTER_PYTHON": sys.executable, SIGNAL_ENV: signal, REQUEUE_ENV: "0" if args.no_requeue else "1",
           MAX_RETRIES_ENV: str(args.max_retries)}
    if args.setup:
        env[SETUP_ENV] = str(Path(args.setup).resolve())
    if args.dry_run:
        print(shlex.join([f"{k}={v}" for k, v in env.items()] + cmd))
        return 0
    log.parent.mkdir(parents=True, exist_ok=True)
    # --export=ALL: the job gets this environment, but not a W&B service address of this host (wandb.init exports
    # one for its child processes; a job on another node cannot reach it, and a requeue would find its run "in use")
    inherited = {k: v for k, v in os.environ.items() if k != "WANDB_SERVICE"}
    done = subprocess.run(cmd, env={**inherited, **env}, capture_output=True, text=True)
    if done.returncode:
        raise PipelineError(f"sbatch refused the job: {'; '.join(done.stderr.strip().splitlines())}")
    job_id = done.stdout.strip().split(";")[0]
    print(job_id)
    print(f"pipeline submit: job {job_id} ({args.nodes} node(s) × {tasks} task(s), "
          f"{'gpu' if args.gpus_per_node else 'cpu'}); log {log}", file=sys.stderr)
    return 0
