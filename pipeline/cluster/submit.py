"""``pipeline submit``: check a SLURM request against its config, then ``sbatch`` it and print the job id.

One run::

    pipeline submit --config configs/x.yaml --nodes 2 --gpus-per-node 4 [-- pipeline fit overrides…]

A run manifest as a job array (only runs without ``result.json``, at most K at once)::

    pipeline submit --manifest runs/sweep/manifest.json --max-parallel 4 [-- overrides for every run…]

Every check runs before ``sbatch`` (and again inside the job): the config parses through the training
CLI, one task per GPU, the shards are visible, enough CPUs per task for the loader workers
(``--cpus-per-task`` defaults to ``data.num_workers`` + 1), ``scontrol`` exists when requeue is on.
``--dry-run`` prints the ``sbatch`` command instead of running it (it needs no SLURM command here).
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
    ResolvedRun,
    check_cpus_per_task,
    check_overrides,
    check_scontrol,
    check_shards,
    check_tasks_per_node,
    check_time_limit,
    cpus_needed,
    resolve_run,
)
from pipeline.cluster.launch import run_dir_overrides
from pipeline.cluster.manifest import index_ranges, pending, read_manifest
from pipeline.errors import PipelineError
from pipeline.preemption import REQUEUE_ENV, SIGNAL_ENV, parse_signal

SLURM_DIR = Path(__file__).resolve().parents[2] / "slurm"
SETUP_ENV = "CLUSTER_SETUP"  # sourced by slurm/*.sbatch before Python


def build_parser() -> argparse.ArgumentParser:
    """The ``pipeline submit`` options; overrides for ``pipeline fit`` follow a ``--``."""
    p = argparse.ArgumentParser(
        prog="pipeline submit", description=__doc__.split("\n\n")[0],
        usage="pipeline submit (--config CFG | --manifest FILE) [options] [-- pipeline fit overrides…]",
    )
    what = p.add_mutually_exclusive_group(required=True)
    what.add_argument("--config", help="training config: one run through slurm/train.sbatch")
    what.add_argument("--manifest", help="run manifest (JSON): a job array through slurm/array.sbatch")
    p.add_argument("--nodes", type=int, default=1, help="nodes per run (default 1)")
    p.add_argument("--gpus-per-node", type=int, default=0, help="GPUs per node; 0 = CPU-only (gloo)")
    p.add_argument("--ntasks-per-node", type=int, help="tasks per node (default: one per GPU, or 1 on CPU)")
    p.add_argument("--cpus-per-task", type=int,
                   help="CPUs per task (also the tasks' OMP_NUM_THREADS; default and minimum: data.num_workers + 1)")
    p.add_argument("--time", help="time limit, e.g. 04:00:00")
    p.add_argument("--partition", help="SLURM partition")
    p.add_argument("--job-name", help="job name (default: the run name or the manifest's name)")
    p.add_argument("--max-parallel", type=int, default=4, help="array runs at once (%%K; default 4)")
    p.add_argument("--signal", default=os.environ.get(SIGNAL_ENV, "USR1"),
                   help="requeue signal sent to the tasks before the time limit: USR1 (default) or USR2")
    p.add_argument("--signal-lead", type=int, default=120, help="seconds before the time limit (default 120)")
    p.add_argument("--no-requeue", action="store_true", help="on the signal only checkpoint and stop")
    p.add_argument("--sbatch-arg", action="append", default=[], metavar="ARG",
                   help="extra sbatch option, e.g. --sbatch-arg=--account=abc (repeatable)")
    p.add_argument("--setup", default=os.environ.get(SETUP_ENV), metavar="FILE",
                   help=f"shell file the job sources before Python: module loads, conda activate (${SETUP_ENV})")
    p.add_argument("--dry-run", action="store_true", help="check, then print the sbatch command instead")
    return p


def split_overrides(argv: list[str]) -> tuple[list[str], list[str]]:
    """``[options…, "--", overrides…]`` → (options, overrides)."""
    if "--" in argv:
        i = argv.index("--")
        return argv[:i], argv[i + 1:]
    return argv, []


def check_run(config: str, overrides: list[str]) -> ResolvedRun:
    """Parse ``config`` + ``overrides`` through the training CLI and check its shards are visible."""
    resolved = resolve_run(config, overrides)
    check_shards(resolved)
    return resolved


def main(argv: list[str]) -> int:
    """Check the request, then submit it (or print the command with ``--dry-run``); print the job id."""
    options, overrides = split_overrides(argv[1:])
    args = build_parser().parse_args(options)
    tasks = args.ntasks_per_node if args.ntasks_per_node is not None else max(args.gpus_per_node, 1)
    if (args.nodes < 1 or args.gpus_per_node < 0 or args.max_parallel < 1 or args.signal_lead < 0
            or (args.cpus_per_task is not None and args.cpus_per_task < 1)):
        raise PipelineError("--nodes, --max-parallel and --cpus-per-task must be ≥ 1, --gpus-per-node and "
                            "--signal-lead ≥ 0")
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
        script, target, array = "train.sbatch", args.config, None
        name = args.job_name or resolved.run_dir.name
        log = resolved.run_dir.parent / "slurm-logs" / f"%x-%j-{stamp}.out"
    else:
        runs = read_manifest(args.manifest)
        todo = pending(runs)
        if not todo:
            print(f"pipeline submit: all {len(runs)} runs of {args.manifest} have a result.json; nothing to submit",
                  file=sys.stderr)
            return 0
        checked = [check_run(run.config, [*run.overrides, *overrides, *run_dir_overrides(Path(run.run_dir))])
                   for run in (runs[i] for i in todo)]
        script, target = "array.sbatch", args.manifest
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
    cmd += [*args.sbatch_arg, str(SLURM_DIR / script), target, *overrides]
    env = {"CLUSTER_PYTHON": sys.executable, SIGNAL_ENV: signal, REQUEUE_ENV: "0" if args.no_requeue else "1"}
    if args.setup:
        env[SETUP_ENV] = str(Path(args.setup).resolve())
    if args.dry_run:
        print(shlex.join([f"{k}={v}" for k, v in env.items()] + cmd))
        return 0
    log.parent.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(cmd, env={**os.environ, **env}, capture_output=True, text=True)
    if done.returncode:
        raise PipelineError(f"sbatch refused the job: {'; '.join(done.stderr.strip().splitlines())}")
    job_id = done.stdout.strip().split(";")[0]
    print(job_id)
    print(f"pipeline submit: job {job_id} ({args.nodes} node(s) × {tasks} task(s), "
          f"{'gpu' if args.gpus_per_node else 'cpu'}); log {log}", file=sys.stderr)
    return 0
