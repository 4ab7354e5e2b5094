"""Preemption-safe stopping: checkpoint at a safe point on a signal, then requeue the SLURM job.

Lightning's own SLURM auto-requeue saves the checkpoint *inside* the signal handler and its SIGTERM
handler issues a collective from inside the handler; both can hang a DDP job when the signal lands
mid-collective (Lightning-AI/pytorch-lightning#21406). Here the handlers only record the signal; the
work happens at the next training-batch end, where every rank agrees (one all-reduce of a small code)
and saves the same step.
"""

from __future__ import annotations

import os
import signal as signals
import subprocess
from collections.abc import Mapping
from pathlib import Path
from types import FrameType
from typing import Any

import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import Callback, ModelCheckpoint
from pytorch_lightning.loggers import WandbLogger
from pytorch_lightning.utilities import rank_zero_info, rank_zero_warn
from pytorch_lightning.utilities.exceptions import SIGTERMException

from pipeline.errors import PipelineError

SIGNAL_ENV = "CLUSTER_REQUEUE_SIGNAL"
REQUEUE_ENV = "CLUSTER_REQUEUE"
_NONE, _STOP, _REQUEUE = 0, 1, 2  # agreed across ranks with a max-reduce: requeue wins over stop


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


def requeue_enabled(env: Mapping[str, str] = os.environ) -> bool:
    """Requeue only inside a SLURM job, and not when the submitter turned it off (``CLUSTER_REQUEUE=0``)."""
    return "SLURM_JOB_ID" in env and env.get(REQUEUE_ENV, "1") != "0"


class RequeueOnSignal(Callback):
    """On the requeue signal: save ``last.ckpt``, ``scontrol requeue`` the job (rank 0), exit cleanly.

    On SIGTERM (plain ``scancel``, or the kill at a time limit) it saves ``last.ckpt`` and exits without
    requeueing. Either way the save happens at the first training-batch end after the signal, on the same
    step on every rank; the next ``pipeline fit … --ckpt_path last`` resumes from it. The checkpoint goes
    to ``trainer.checkpoint_callback.dirpath`` through the trainer's checkpoint IO (atomic in this project).

    Args:
        signal: the requeue signal (``"USR1"``/``"USR2"``); default: ``$CLUSTER_REQUEUE_SIGNAL``, else USR1.
            Use USR2 where NCCL or another library claims USR1; sbatch's ``--signal`` must send the same one.
    """

    def __init__(self, signal: str | None = None) -> None:
        self.signal = parse_signal(signal or os.environ.get(SIGNAL_ENV) or "USR1")
        self._code = _NONE
        self._sigterm_before: Any = None  # SIGTERM's handler before setup, given back at teardown

    # --- signal handlers: record only (no I/O, no collectives, no locks) ------------------------
    def _on_signal(self, signum: int, _frame: FrameType | None) -> None:
        self._code = max(self._code, _REQUEUE if signum == self.signal else _STOP)

    def _install(self) -> None:
        signals.signal(self.signal, self._on_signal)
        previous = signals.signal(signals.SIGTERM, self._on_signal)
        if self._sigterm_before is None:
            self._sigterm_before = previous

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        """Catch the signals from the start of fitting, so one arriving during start-up is not lost."""
        if stage == "fit":
            self._install()

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Take SIGTERM back from Lightning, which registered its own handler after ``setup``."""
        self._install()
        if self._checkpoint_callback(trainer) is None:
            raise PipelineError("RequeueOnSignal needs a ModelCheckpoint callback with a dirpath to save last.ckpt")
        rank_zero_info(f"RequeueOnSignal: {self.signal.name} checkpoints and "
                       f"{'requeues' if requeue_enabled() else 'stops'}; SIGTERM checkpoints and stops")

    def teardown(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        """Give SIGTERM back; keep the requeue signal, so one arriving while the result is written does not kill it."""
        if self._sigterm_before is not None:
            signals.signal(signals.SIGTERM, self._sigterm_before)
            self._sigterm_before = None

    # --- the safe point ----------------------------------------------------------------------------
    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, *args: Any) -> None:
        """Agree across ranks whether any got a signal; if so save, maybe requeue, and stop."""
        code = torch.tensor(self._code, device=trainer.strategy.root_device)
        code = int(trainer.strategy.reduce(code, reduce_op="max"))
        if code == _NONE:
            return
        path = self._save_last(trainer)
        requeue = code == _REQUEUE and requeue_enabled()
        if trainer.is_global_zero:
            why = self.signal.name if code == _REQUEUE else "SIGTERM"
            rank_zero_info(f"RequeueOnSignal: {why} → saved {path} at global step {trainer.global_step}")
            self._close_wandb(trainer, preempting=requeue)
            if requeue:
                self._requeue()
        # Lightning's own exit for a SIGTERM: tears the trainer down, skips everything after fit, exit status 0.
        raise SIGTERMException

    @staticmethod
    def _checkpoint_callback(trainer: pl.Trainer) -> ModelCheckpoint | None:
        cb = trainer.checkpoint_callback
        return cb if isinstance(cb, ModelCheckpoint) and cb.dirpath else None

    def _save_last(self, trainer: pl.Trainer) -> Path:
        cb = self._checkpoint_callback(trainer)
        assert cb is not None and cb.dirpath is not None  # checked in on_train_start
        path = Path(cb.dirpath) / f"{cb.CHECKPOINT_NAME_LAST}{cb.FILE_EXTENSION}"
        # set before saving, as ModelCheckpoint does: it is part of the saved state, and a resumed
        # ModelCheckpoint then overwrites this file instead of versioning a last-v1.ckpt beside it
        cb.last_model_path = str(path)
        trainer.save_checkpoint(path)  # every rank calls; rank 0 writes, then all meet at a barrier
        return path

    @staticmethod
    def _close_wandb(trainer: pl.Trainer, preempting: bool) -> None:
        """Finish the W&B run and stop W&B's service process now, before a requeue or cancel SIGTERMs them.

        The next start resumes the same run (the training CLI keeps its id in the run directory).
        """
        runs = [logger.experiment for logger in trainer.loggers if isinstance(logger, WandbLogger)]
        if not runs:
            return
        import wandb

        try:
            if preempting:
                for run in runs:
                    run.mark_preempting()
            wandb.teardown()
        except Exception as err:  # scancel SIGTERMs W&B's service process too; the checkpoint is what matters
            rank_zero_warn(f"RequeueOnSignal: W&B did not close cleanly ({type(err).__name__}: {err}); "
                           "the offline run keeps what it logged and the next start resumes it")

    @staticmethod
    def _requeue() -> None:
        job_id = os.environ["SLURM_JOB_ID"]
        try:
            done = subprocess.run(["scontrol", "requeue", job_id], capture_output=True, text=True, timeout=60)
            error = done.stderr.strip() if done.returncode else ""
        except (OSError, subprocess.TimeoutExpired) as err:
            error = str(err)
        if error:  # the checkpoint is saved: a manual resubmit resumes from it
            rank_zero_warn(f"RequeueOnSignal: `scontrol requeue {job_id}` failed: {error}")
        else:
            rank_zero_info(f"RequeueOnSignal: requeued SLURM job {job_id}")
