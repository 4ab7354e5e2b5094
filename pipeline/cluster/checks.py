"""Checks of a SLURM request against its training config, run before ``sbatch`` and again inside the job.

Each check raises :class:`PipelineError` with one line saying what to change: the usual multi-node
failures (ranks stuck at "Initializing distributed", a requeue that never happens) become an
immediate refusal instead of a job that hangs until its time limit.
"""

from __future__ import annotations

import re
import shutil
import socket
import subprocess

from pipeline.errors import PipelineError
from pipeline.training.config import ResolvedRun

# Set from the allocation by the launcher; a second value on the command line would disagree with it.
ALLOCATION_KEYS = ("--trainer.num_nodes", "--trainer.devices", "--trainer.accelerator", "--ckpt_path")


def check_overrides(overrides: list[str]) -> None:
    """Refuse overrides of what the allocation decides (nodes, devices, accelerator) or the launcher sets."""
    for arg in overrides:
        key = arg.split("=", 1)[0]
        if key in ALLOCATION_KEYS:
            raise PipelineError(f"{key} is set by the SLURM launcher from the allocation (--nodes, "
                                "--ntasks-per-node, GPUs); remove it from the overrides")


def check_tasks_per_node(tasks_per_node: int, gpus_per_node: int) -> None:
    """One task per GPU: Lightning's DDP under SLURM waits forever for ranks that were never started otherwise."""
    if tasks_per_node < 1:
        raise PipelineError(f"--ntasks-per-node must be ≥ 1 (got {tasks_per_node})")
    if gpus_per_node and tasks_per_node != gpus_per_node:
        raise PipelineError(f"--ntasks-per-node={tasks_per_node} but {gpus_per_node} GPUs per node: DDP needs "
                            f"one task per GPU, use --ntasks-per-node={gpus_per_node}")


def time_limit_s(text: str) -> int | None:
    """Seconds in a SLURM time limit (``M``, ``M:S``, ``H:M:S``, ``D-H``, ``D-H:M``, ``D-H:M:S``); None = unlimited."""
    if text.lower() in ("unlimited", "infinite"):
        return None
    match = re.fullmatch(r"(?:(\d+)-)?(\d+)(?::(\d+))?(?::(\d+))?", text.strip())
    if match is None:
        raise PipelineError(f"--time={text} is not a SLURM time limit (e.g. 90, 4:00:00, 2-00:00:00)")
    days, *parts = match.groups()
    fields = [int(p) for p in parts if p is not None]
    if days is not None:  # D-H[:M[:S]]
        h, m, sec = [*fields, 0, 0][:3]
    elif len(fields) == 3:  # H:M:S
        h, m, sec = fields
    else:  # M or M:S
        h, m, sec = 0, fields[0], (fields[1:] or [0])[0]
    return ((int(days or 0) * 24 + h) * 60 + m) * 60 + sec


def check_time_limit(text: str | None, lead_s: int) -> None:
    """The requeue signal must come after the start: the time limit has to exceed the signal's lead."""
    limit = time_limit_s(text) if text else None
    if limit is not None and limit <= lead_s:
        raise PipelineError(f"--time={text} is not longer than the requeue signal's lead ({lead_s} s): "
                            "lengthen --time or shorten --signal-lead")


def check_scontrol(job_id: str | None = None) -> None:
    """``scontrol`` must run where the job runs, or a requeue signal can only save and stop.

    With ``job_id`` (inside a job) also check that SLURM will requeue it (``--requeue``, ``JobRequeue``).
    """
    if shutil.which("scontrol") is None:
        raise PipelineError("requeue is on but `scontrol` is not on PATH here (inside a container?): make it "
                            "available to the job or submit with --no-requeue")
    if job_id is None:
        return
    done = subprocess.run(["scontrol", "show", "job", "-o", job_id], capture_output=True, text=True, timeout=60)
    if done.returncode:
        raise PipelineError(f"requeue is on but `scontrol show job {job_id}` failed: {done.stderr.strip()}")
    if " Requeue=0 " in f" {done.stdout} ":
        raise PipelineError(f"requeue is on but job {job_id} is not requeueable: submit with --requeue "
                            "(or set CLUSTER_REQUEUE=0 to only checkpoint on the signal)")


def check_shards(resolved: ResolvedRun) -> None:
    """The config's shards must be readable from here (the submit host, or the job's first node)."""
    from pipeline.data.datamodule import ShardDataModule  # reads and checks the manifest and shard files

    try:
        ShardDataModule(**resolved.config["data"])
    except PipelineError as err:
        raise PipelineError(f"shards not visible from {socket.gethostname()}: {err}") from None


def cpus_needed(resolved: ResolvedRun) -> int:
    """CPUs one task of this run keeps busy: one per loader worker (``data.num_workers``) + the training process."""
    return int(resolved.config["data"]["num_workers"]) + 1


def check_cpus_per_task(cpus: int, resolved: ResolvedRun) -> None:
    """Refuse fewer CPUs per task than the run's loader needs: its workers would share one core and starve the GPU."""
    needed = cpus_needed(resolved)
    if cpus < needed:
        raise PipelineError(f"--cpus-per-task={cpus} but data.num_workers={needed - 1}: each task needs {needed} "
                            f"CPUs (one per loader worker + the training process); request --cpus-per-task={needed} "
                            "or lower data.num_workers")
