"""The in-job launcher behind ``slurm/*.sbatch``: re-check the request, pick the run directory, run ``srun``.

``python -m pipeline.commands.launch train <config.yaml> [overrides…]`` (train.sbatch),
``… resume <run dir> [overrides…]`` (train.sbatch --resume: the stored config, the same directory) or
``… array <run_manifest.json> [overrides…]`` (array.sbatch, one entry per ``SLURM_ARRAY_TASK_ID``). It runs
as the batch step and starts, as its child::

    srun --kill-on-bad-exit=1 python -m pipeline.cli fit --config C [overrides…] [run dir]
         --trainer.num_nodes $SLURM_NNODES --trainer.devices $SLURM_NTASKS_PER_NODE
         --trainer.accelerator gpu|cpu --ckpt_path last

so ``num_nodes`` / ``devices`` come from the allocation only, and a requeued start resumes from
``last.ckpt`` (a first start, with no checkpoint yet, starts fresh). The launcher forwards signals to
``srun`` and, when a task dies (killed, segfault, NCCL error: ``--kill-on-bad-exit`` stops the others),
requeues the job to resume from ``last.ckpt`` (:func:`retry_decision`: bounded by ``CLUSTER_MAX_RETRIES``,
never for a refusal, never again for a failure that repeats at the same step). Each attempt and its
outcome go to the run's ``slurm.log``; the failures to ``retries.json``.
"""

from __future__ import annotations

import json
import signal as signals
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from types import FrameType

from pipeline.atomic import atomic_write_json
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
from pipeline.training.result import RESULT_FILE
from pipeline.training.rundir import CHECKPOINT_DIR, CONFIG_FILE, LAST

MAX_RETRIES_ENV = "CLUSTER_MAX_RETRIES"
DEFAULT_MAX_RETRIES = 3
RETRIES_FILE = "retries.json"  # the failed attempts of a run, in its directory
LOG_FILE = "slurm.log"  # one line per attempt and per outcome, in the run directory

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
    if len(argv) < 2 or argv[0] not in ("train", "resume", "array"):
        raise PipelineError("usage: python -m pipeline.commands.launch train <config.yaml> [overrides…] | "
                            "resume <run dir> [overrides…] | array <run_manifest.json> [overrides…]")
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
    elif mode == "resume":
        run = Path(target).resolve()
        config, overrides = str(resumable_config(run)), [*extra, *run_dir_overrides(run)]
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


def resumable_config(run: Path) -> Path:
    """The stored config of an unfinished run directory; a one-line PipelineError for anything else."""
    if not (run / CONFIG_FILE).is_file():
        raise PipelineError(f"{run} is not a run directory (no {CONFIG_FILE}): give the directory a fit wrote, "
                            "e.g. runs/<sweep>/<run>")
    if (run / RESULT_FILE).is_file():
        raise PipelineError(f"{run} is finished ({RESULT_FILE} exists): nothing to resume")
    return run / CONFIG_FILE


def log_line(directory: Path, text: str) -> None:
    """Append a time-stamped line to the run's ``slurm.log`` (which jobs and attempts trained it, and how)."""
    with open(directory / LOG_FILE, "a") as log:
        log.write(f"{time.strftime('%Y-%m-%dT%H:%M:%S')} {text}\n")


def run_child(cmd: list[str], env: dict[str, str], forward: tuple[signals.Signals, ...]) -> tuple[int, set[int]]:
    """Run ``cmd`` (srun) as a child, passing ``forward`` signals on to it; (exit status, signals received).

    A signal kills a child with 128 + its number, as a shell reports it.
    """
    child = subprocess.Popen(cmd, env=env)
    received: set[int] = set()

    def pass_on(signum: int, _frame: FrameType | None) -> None:
        received.add(signum)
        child.send_signal(signum)

    previous = {sig: signals.signal(sig, pass_on) for sig in forward}
    try:
        code = child.wait()
    finally:
        for sig, handler in previous.items():
            signals.signal(sig, handler)
    return (128 - code if code < 0 else code), received


def checkpoint_step(directory: Path) -> int | None:
    """The global step of the run's ``last.ckpt``, or None without one."""
    # imported here: it needs torch, and `pipeline submit` / `pipeline sweep` import this module for their
    # --help and checks, which should not wait seconds for torch
    from pipeline.training.checkpoint import load_checkpoint

    last = directory / CHECKPOINT_DIR / f"{LAST}.ckpt"
    return int(load_checkpoint(last, mmap=True)["global_step"]) if last.is_file() else None


def max_retries(env: dict[str, str]) -> int:
    """``$CLUSTER_MAX_RETRIES`` (default 3); PipelineError for anything but a count ≥ 0."""
    text = env.get(MAX_RETRIES_ENV, str(DEFAULT_MAX_RETRIES))
    if not text.isdigit():
        raise PipelineError(f"{MAX_RETRIES_ENV}={text!r} must be a count ≥ 0 (pipeline submit --max-retries)")
    return int(text)


def retry_decision(directory: Path, code: int, env: dict[str, str]) -> tuple[bool, str]:
    """Whether a failed attempt (``srun`` exit status ``code``) is retried from ``last.ckpt``, and one line why.

    Not retried: exit status 2 (a refusal or a non-finite loss: the same input fails the same way), no
    checkpoint yet, requeue turned off, the limit reached, or the same failure twice in a row (same exit
    status, no progress: ``last.ckpt`` at the same step), which marks a deterministic bug. Every failure is
    appended to the run's ``retries.json``.
    """
    step = checkpoint_step(directory)
    path = directory / RETRIES_FILE
    failures = json.loads(path.read_text()) if path.is_file() else []
    failures.append({"job": job_to_requeue(env), "restart": int(env.get("SLURM_RESTART_COUNT") or 0),
                     "exit": code, "step": step, "time": time.strftime("%Y-%m-%dT%H:%M:%S")})
    atomic_write_json(path, failures)
    again = f"fix the cause, then: pipeline submit --resume {directory.resolve()}"
    if code == 2:
        return False, f"exit 2 (a refusal or a non-finite loss) is not retried: {again}"
    if step is None:
        return False, f"failed (exit {code}) before its first checkpoint: nothing to resume; submit it again"
    if not requeue_enabled(env):
        return False, f"failed (exit {code}) with last.ckpt at step {step}; requeue is off: {again}"
    if len(failures) > 1 and (failures[-2]["exit"], failures[-2]["step"]) == (code, step):
        return False, f"failed the same way twice (exit {code}, last.ckpt at step {step}): not retried; {again}"
    limit = max_retries(env)
    if len(failures) > limit:
        return False, f"failed {len(failures)} times (limit {limit}, {MAX_RETRIES_ENV}): not retried; {again}"
    return True, f"failed (exit {code}); retry {len(failures)} of {limit} from last.ckpt at step {step}"
