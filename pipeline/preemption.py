"""The requeue signal from a process's first moment: its name, a recording handler, and the requeue itself.

Standard library only, so ``pipeline.cli`` (each task) and the in-job launcher (the batch step) install
the handler before any heavy import: a requeue signal that arrives while a task imports torch or the
launcher checks the config is recorded instead of killing the process (which SLURM reports as a FAILED
job, "task 1: User defined signal 1"). :class:`~pipeline.training.requeue.RequeueOnSignal` takes the
record over at its first safe point; the launcher acts on it itself before it starts ``srun``.
"""

from __future__ import annotations

import os
import signal as signals
import subprocess
from collections.abc import Mapping
from types import FrameType

from pipeline.errors import PipelineError

SIGNAL_ENV = "CLUSTER_REQUEUE_SIGNAL"
REQUEUE_ENV = "CLUSTER_REQUEUE"
# set by the sbatch scripts' bash trap when the signal reached the batch shell before Python ran
SIGNALLED_ENV = "CLUSTER_SIGNALLED"

_received: set[int] = set()


def parse_signal(name: str) -> signals.Signals:
    """``"USR1"``, ``"SIGUSR2"``, ``"usr2"`` or ``"12"`` → the signal; PipelineError for anything unusable."""
    text = name.strip().upper()
    try:
        sig = signals.Signals(int(text)) if text.isdigit() else signals.Signals["SIG" + text.removeprefix("SIG")]
    except (KeyError, ValueError):
        sig = None
    if sig is None or sig in (signals.SIGTERM, signals.SIGKILL, signals.SIGSTOP):
        raise PipelineError(f"unusable requeue signal {name!r}: use USR1 (the default) or USR2")
    return sig


def requeue_signal(env: Mapping[str, str] = os.environ) -> signals.Signals:
    """The job's requeue signal: ``$CLUSTER_REQUEUE_SIGNAL``, else USR1."""
    return parse_signal(env.get(SIGNAL_ENV) or "USR1")


def requeue_enabled(env: Mapping[str, str] = os.environ) -> bool:
    """Requeue only inside a SLURM job, and not when the submitter turned it off (``CLUSTER_REQUEUE=0``)."""
    return "SLURM_JOB_ID" in env and env.get(REQUEUE_ENV, "1") != "0"


def _record(signum: int, _frame: FrameType | None) -> None:
    _received.add(signum)  # a handler only records: no I/O, no locks


def install(env: Mapping[str, str] = os.environ) -> signals.Signals | None:
    """Inside a SLURM job, record the requeue signal from now on instead of dying of it; return it.

    Outside SLURM, or with a signal name the launcher will refuse with one line, do nothing (None).
    """
    if "SLURM_JOB_ID" not in env:
        return None
    try:
        sig = requeue_signal(env)
        # the sbatch scripts' bash trap caught it before Python ran
        trapped = parse_signal(env[SIGNALLED_ENV]) if env.get(SIGNALLED_ENV) else None
    except PipelineError:
        return None
    signals.signal(sig, _record)
    if trapped is not None:
        _received.add(trapped)
    return sig


def received(sig: int) -> bool:
    """Whether ``sig`` arrived since :func:`install`."""
    return sig in _received


def job_to_requeue(env: Mapping[str, str] = os.environ) -> str:
    """The id ``scontrol requeue`` needs for this job alone: ``<array job id>_<task id>`` for an array task.

    An array's first task has ``SLURM_JOB_ID`` equal to the array's id, and ``scontrol requeue <array id>``
    requeues every task of the array, running or finished (Lightning-AI/pytorch-lightning#15022).
    """
    if env.get("SLURM_ARRAY_JOB_ID") and env.get("SLURM_ARRAY_TASK_ID"):
        return f"{env['SLURM_ARRAY_JOB_ID']}_{env['SLURM_ARRAY_TASK_ID']}"
    return env["SLURM_JOB_ID"]


def requeue_job(env: Mapping[str, str] = os.environ) -> str | None:
    """``scontrol requeue`` this job (an array task alone): None when SLURM took it, else the one-line reason
    it failed.

    SLURM then SIGTERMs every process of the job (SIGKILL after KillWait) and starts it again later.
    """
    try:
        done = subprocess.run(["scontrol", "requeue", job_to_requeue(env)], capture_output=True, text=True,
                              timeout=60)
    except (OSError, subprocess.TimeoutExpired) as err:
        return str(err)
    return "; ".join(done.stderr.strip().splitlines()) if done.returncode else None
