"""The in-job launcher behind ``slurm/*.sbatch``: re-check the request, pick the run directory, exec ``srun``.

``python -m pipeline.commands.launch train <config.yaml> [overrides…]`` (train.sbatch) or
``python -m pipeline.commands.launch array <manifest.json> [overrides…]`` (array.sbatch, one entry per
``SLURM_ARRAY_TASK_ID``). It runs as the batch step and replaces itself with::

    srun --kill-on-bad-exit=1 python -m pipeline.cli fit --config C [overrides…] [run dir]
         --trainer.num_nodes $SLURM_NNODES --trainer.devices $SLURM_NTASKS_PER_NODE
         --trainer.accelerator gpu|cpu --ckpt_path last

so ``num_nodes`` / ``devices`` come from the allocation only, and a requeued start resumes from
``last.ckpt`` (a first start, with no checkpoint yet, starts fresh).
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from pathlib import Path

from pipeline.cluster.checks import (
    check_cpus_per_task,
    check_overrides,
    check_scontrol,
    check_shards,
    check_tasks_per_node,
)
from pipeline.cluster.run_manifest import read_manifest
from pipeline.errors import PipelineError
from pipeline.preemption import job_to_requeue, requeue_enabled, requeue_job, requeue_signal
from pipeline.training.config import resolve_run

# Inherited from the submitting shell they would point every node at the wrong rendezvous;
# Lightning's SLURMEnvironment derives both from the job (first node, port from the job id).
STALE_ENV = ("MASTER_ADDR", "MASTER_PORT", "WORLD_SIZE", "RANK", "LOCAL_RANK", "NODE_RANK")


@dataclass(frozen=True)
class Job:
    """The parts of the SLURM allocation the launcher needs, read from the batch step's environment."""

    job_id: str
    nodes: int
    tasks_per_node: int
    gpus_per_node: int
    cpus_per_task: int | None
    cpus_on_node: int | None
    restarts: int
    array_index: int | None

    @classmethod
    def from_env(cls, env: dict[str, str]) -> Job:
        """Read the allocation; PipelineError outside a batch job or without ``--ntasks-per-node``."""
        if "SLURM_JOB_ID" not in env:
            raise PipelineError("not inside a SLURM job: submit with `sbatch slurm/<script>` or `pipeline submit`")
        if "SLURM_NTASKS_PER_NODE" not in env:
            raise PipelineError("the job has no --ntasks-per-node: request it (one task per GPU, or per "
                                "CPU process) so devices can be derived from the allocation")
        return cls(
            job_id=env["SLURM_JOB_ID"],
            nodes=int(env["SLURM_NNODES"]),
            tasks_per_node=int(env["SLURM_NTASKS_PER_NODE"]),
            gpus_per_node=int(env.get("SLURM_GPUS_ON_NODE") or 0),
            cpus_per_task=int(env["SLURM_CPUS_PER_TASK"]) if env.get("SLURM_CPUS_PER_TASK") else None,
            cpus_on_node=int(env["SLURM_CPUS_ON_NODE"]) if env.get("SLURM_CPUS_ON_NODE") else None,
            restarts=int(env.get("SLURM_RESTART_COUNT") or 0),
            array_index=int(env["SLURM_ARRAY_TASK_ID"]) if "SLURM_ARRAY_TASK_ID" in env else None,
        )

    def task_cpus(self) -> int:
        """CPUs each task gets: ``--cpus-per-task``, else this node's CPUs shared by its tasks, else SLURM's 1."""
        if self.cpus_per_task:
            return self.cpus_per_task
        return max(self.cpus_on_node // self.tasks_per_node, 1) if self.cpus_on_node else 1


def job_run_name(base: str, job: Job, parent: Path) -> str:
    """A run name unique to this job: ``<base>-j<id>-<start time>``, the same again on every requeued start.

    The job id alone is not unique (ids restart at 1 when slurmctld's state is wiped), so the first start
    adds its start time; a restart (``SLURM_RESTART_COUNT`` > 0) takes the newest directory of its job id.
    """
    prefix = f"{base}-j{job.job_id}-"
    if job.restarts:
        earlier = sorted(p.name for p in parent.glob(f"{prefix}*") if p.is_dir())
        if earlier:
            return earlier[-1]
    return prefix + time.strftime("%Y%m%dT%H%M%S")


def run_dir_overrides(run_dir: Path) -> list[str]:
    """The ``run.*`` overrides that make the training CLI use exactly ``run_dir`` (= root/sweep/name)."""
    if len(run_dir.parts) < 3:
        raise PipelineError(f"run_dir {run_dir} must look like <root>/<sweep>/<name>")
    return ["--run.root", str(run_dir.parent.parent), "--run.sweep", run_dir.parent.name, "--run.name", run_dir.name]


def srun_command(job: Job, config: str, overrides: list[str]) -> list[str]:
    """The ``srun … pipeline fit`` command for ``job``: one task per device, devices from the allocation."""
    cmd = ["srun", "--kill-on-bad-exit=1"]
    if job.cpus_per_task:  # Slurm 22.05+ srun no longer inherits --cpus-per-task from sbatch
        cmd.append(f"--cpus-per-task={job.cpus_per_task}")
    return [
        *cmd, sys.executable, "-m", "pipeline.cli", "fit", "--config", config, *overrides,
        "--trainer.num_nodes", str(job.nodes), "--trainer.devices", str(job.tasks_per_node),
        "--trainer.accelerator", "gpu" if job.gpus_per_node else "cpu", "--ckpt_path", "last",
    ]


def task_env(job: Job, env: dict[str, str]) -> dict[str, str]:
    """The environment for ``srun``: no stale rendezvous, threads per task, NCCL defaults that fail loudly."""
    env = {k: v for k, v in env.items() if k not in STALE_ENV}
    env.setdefault("OMP_NUM_THREADS", str(job.task_cpus()))
    env.setdefault("TORCH_NCCL_ASYNC_ERROR_HANDLING", "1")  # a dead rank aborts the others instead of hanging them
    env.setdefault("NCCL_DEBUG", "WARN")
    return env


def prepare(argv: list[str], env: dict[str, str]) -> tuple[list[str], dict[str, str], Path]:
    """Check the request inside the job and return (srun command, its environment, run directory)."""
    if len(argv) < 2 or argv[0] not in ("train", "array"):
        raise PipelineError("usage: python -m pipeline.commands.launch train <config.yaml> [overrides…] | "
                            "array <manifest.json> [overrides…]")
    mode, target, extra = argv[0], argv[1], argv[2:]
    job = Job.from_env(env)
    check_tasks_per_node(job.tasks_per_node, job.gpus_per_node)
    requeue_signal(env)
    if requeue_enabled(env):
        check_scontrol(job.job_id)
    if mode == "array":
        if job.array_index is None:
            raise PipelineError("array.sbatch needs --array=<indices> (pipeline submit --manifest sets it)")
        runs = read_manifest(target)
        if job.array_index >= len(runs):
            raise PipelineError(f"array index {job.array_index} but {target} lists {len(runs)} runs")
        entry = runs[job.array_index]
        config, overrides = entry.config, [*entry.overrides, *extra, *run_dir_overrides(Path(entry.run_dir))]
    else:
        config, overrides = target, extra
    check_overrides(overrides)
    resolved = resolve_run(config, overrides)
    check_shards(resolved)
    check_cpus_per_task(job.task_cpus(), resolved)
    directory = resolved.run_dir
    if mode == "train":
        directory = directory.parent / job_run_name(directory.name, job, directory.parent)
        overrides = [*overrides, "--run.name", directory.name]
    return srun_command(job, config, overrides), task_env(job, env), directory


def stop_before_training(env: dict[str, str]) -> int:
    """The requeue signal came before ``srun`` started: nothing to save, so requeue (if on) and exit 0."""
    name = requeue_signal(env).name
    if not requeue_enabled(env):
        print(f"pipeline launch: {name} before training started: stopping (requeue is off)", flush=True)
        return 0
    error = requeue_job(env)
    if error:
        print(f"pipeline launch: error: {name} before training started, and `scontrol requeue` failed: {error}",
              file=sys.stderr, flush=True)
        return 1
    print(f"pipeline launch: {name} before training started: requeued SLURM job {job_to_requeue(env)}", flush=True)
    return 0
