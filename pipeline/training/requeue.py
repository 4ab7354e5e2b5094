"""Preemption-safe stopping: checkpoint at a safe point on a signal, then requeue the SLURM job.

Lightning's own SLURM auto-requeue saves the checkpoint *inside* the signal handler and its SIGTERM
handler issues a collective from inside the handler; both can hang a DDP job when the signal lands
mid-collective (Lightning-AI/pytorch-lightning#21406). Here the handlers only record the signal; the
work happens at the next safe point, where every rank agrees (one all-reduce of a small code):

- ``setup`` and ``on_train_start``: nothing trained in this start yet, so nothing to save; the next
  start resumes from the same ``last.ckpt`` (or starts fresh). This covers a signal that arrived while
  the task was still importing (recorded by :mod:`pipeline.preemption`).
- every training-batch end, and the end of every validation during fit. Validation itself is not
  interrupted: ranks may run different numbers of eval batches (exact eval), so a per-batch collective
  there could deadlock; every rank reaches ``on_validation_end``, so the agreement waits for it. The
  signal lead (``--signal-lead``) must cover one validation pass plus a checkpoint save.
"""

from __future__ import annotations

import signal as signals
import sys
import threading
from pathlib import Path
from types import FrameType
from typing import Any

import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import Callback, ModelCheckpoint
from pytorch_lightning.trainer.states import TrainerFn
from pytorch_lightning.utilities import rank_zero_info, rank_zero_warn
from pytorch_lightning.utilities.exceptions import SIGTERMException

from pipeline import preemption
from pipeline.errors import PipelineError
from pipeline.preemption import job_to_requeue, parse_signal, requeue_enabled, requeue_job, requeue_signal

_NONE, _STOP, _REQUEUE = 0, 1, 2  # agreed across ranks with a max-reduce: requeue wins over stop
WANDB_CLOSE_S = 30.0  # the longest W&B may delay the requeue


class RequeueOnSignal(Callback):
    """On the requeue signal: save ``last.ckpt``, ``scontrol requeue`` the job (rank 0), exit cleanly.

    On SIGTERM (plain ``scancel``, or the kill at a time limit) it saves ``last.ckpt`` and exits without
    requeueing. Either way the save happens at the first safe point after the signal (see the module
    docstring), on the same step on every rank; the next ``pipeline fit … --ckpt_path last`` resumes
    from it. The checkpoint goes to ``trainer.checkpoint_callback.dirpath`` through the trainer's
    checkpoint IO (atomic in this project). The process exits with status 0 (Lightning's SIGTERM exit).

    Args:
        signal: the requeue signal (``"USR1"``/``"USR2"``); default: ``$CLUSTER_REQUEUE_SIGNAL``, else USR1.
            Use USR2 where NCCL or another library claims USR1; sbatch's ``--signal`` must send the same one.
    """

    def __init__(self, signal: str | None = None) -> None:
        self.signal = parse_signal(signal) if signal else requeue_signal()
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
        if preemption.received(self.signal):  # arrived before this process could checkpoint
            self._code = max(self._code, _REQUEUE)

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        """Catch the signals from the start of fitting; act on one that arrived during start-up."""
        if stage == "fit":
            self._install()
            self._agree_and_stop(trainer, trained=False)

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Take SIGTERM back from Lightning, which registered its own handler after ``setup``."""
        self._install()
        if self._checkpoint_callback(trainer) is None:
            raise PipelineError("RequeueOnSignal needs a ModelCheckpoint callback with a dirpath to save last.ckpt")
        rank_zero_info(f"RequeueOnSignal: {self.signal.name} checkpoints and "
                       f"{'requeues' if requeue_enabled() else 'stops'}; SIGTERM checkpoints and stops")
        self._agree_and_stop(trainer, trained=False)

    def teardown(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        """Give SIGTERM back; keep the requeue signal, so one arriving while the result is written does not kill it."""
        if self._sigterm_before is not None:
            signals.signal(signals.SIGTERM, self._sigterm_before)
            self._sigterm_before = None

    # --- the safe points -----------------------------------------------------------------------------
    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, *args: Any) -> None:
        """Agree across ranks whether any got a signal; if so save, maybe requeue, and stop."""
        self._agree_and_stop(trainer, trained=True)

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """The same at the end of a validation during fit (a signal that arrived while evaluating)."""
        if trainer.state.fn != TrainerFn.FITTING or trainer.sanity_checking:
            return
        self._agree_and_stop(trainer, trained=True, pl_module=pl_module)

    def _agree_and_stop(self, trainer: pl.Trainer, trained: bool, pl_module: pl.LightningModule | None = None) -> None:
        code = torch.tensor(self._code, device=trainer.strategy.root_device)
        code = int(trainer.strategy.reduce(code, reduce_op="max"))
        if code == _NONE:
            return
        requeue = code == _REQUEUE and requeue_enabled()
        if trained:
            if pl_module is not None:
                # Lightning calls the checkpoint callbacks' on_validation_end after ours: let them see this
                # validation first (best.ckpt), since the resumed run skips it (it restarts after it)
                for callback in trainer.checkpoint_callbacks:
                    callback.on_validation_end(trainer, pl_module)
            done = f"saved {self._save_last(trainer)} at global step {trainer.global_step}"
        else:
            done = "nothing trained in this start yet, nothing to save"
        if trainer.is_global_zero:
            why = self.signal.name if code == _REQUEUE else "SIGTERM"
            rank_zero_info(f"RequeueOnSignal: {why} → {done}")
            self._close_wandb(preempting=requeue)
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
    def _close_wandb(preempting: bool) -> None:
        """Finish this process's W&B run and stop W&B's service, for at most WANDB_CLOSE_S seconds.

        Before the requeue, on purpose: the requeue SIGTERMs every process of the job, W&B's service
        (wandb-core) included, which then exits at once and loses the records it has not written yet
        (measured: 32 KiB written of a 52 KiB run). The deadline keeps a slow or hung W&B from delaying
        the requeue past the time limit; the checkpoint is already saved. The next start resumes the run.
        """
        wandb = sys.modules.get("wandb")  # imported by the logger only if this process started a run
        if wandb is None or wandb.run is None:
            return
        errors: list[BaseException] = []

        def close() -> None:
            try:
                if preempting:
                    wandb.run.mark_preempting()
                wandb.teardown()
            except Exception as err:  # a cancel SIGTERMs W&B's service too; the checkpoint is what matters
                errors.append(err)

        closer = threading.Thread(target=close, name="wandb-close", daemon=True)
        closer.start()
        closer.join(WANDB_CLOSE_S)
        if closer.is_alive() or errors:
            why = f"{type(errors[0]).__name__}: {errors[0]}" if errors else f"still closing after {WANDB_CLOSE_S:g} s"
            rank_zero_warn(f"RequeueOnSignal: W&B did not close cleanly ({why}); the offline run keeps what "
                           "it wrote and the next start resumes it")

    @staticmethod
    def _requeue() -> None:
        job_id = job_to_requeue()
        error = requeue_job()
        if error:  # the checkpoint is saved: a manual resubmit resumes from it
            rank_zero_warn(f"RequeueOnSignal: `scontrol requeue {job_id}` failed: {error}")
        else:
            rank_zero_info(f"RequeueOnSignal: requeued SLURM job {job_id}")
