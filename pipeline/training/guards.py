"""Stop a diverged run at its first non-finite step, on every rank, before it reaches a checkpoint.

Lightning has no such stop: ``detect_anomaly`` is a slow debugging mode and ``EarlyStopping``'s
``check_finite`` looks only at a monitored metric at validation time, after the epoch's checkpoints
have been written with NaN weights.
"""

from __future__ import annotations

from typing import Any

import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import Callback
from torch import Tensor

from pipeline.errors import PipelineError


class NonFiniteError(PipelineError):
    """Training produced a non-finite loss or weights; the run stopped without writing anything."""


def _any_rank(trainer: pl.Trainer, bad: Tensor) -> bool:
    """True on every rank when the 0-dim bool ``bad`` is True on any rank.

    One scalar all-reduce under DDP and one device→host copy (the flag stays on the device until then).
    """
    flag = bad.to(device=trainer.strategy.root_device, dtype=torch.float32)
    return bool(trainer.strategy.reduce(flag, reduce_op="sum") > 0)


class NonFiniteGuard(Callback):
    """Raise :class:`NonFiniteError` on every rank at the first step whose loss is NaN or infinite.

    The loss is checked before its backward pass, so a non-finite loss never reaches the weights; the
    ranks agree through one scalar all-reduce per step and stop at the same step. Steps are counted from
    0 as ``trainer.global_step`` counts them. Weights that become
    non-finite from a finite loss (overflowing gradients) make the next step's loss non-finite; a
    checkpoint written between those two steps (an epoch end) is checked tensor by tensor first, so no
    checkpoint with non-finite weights is ever written. Raising in these hooks ends ``fit`` before
    ModelCheckpoint's next save, so ``last.ckpt`` and ``best.ckpt`` stay those of the last good epoch.
    """

    def on_before_backward(self, trainer: pl.Trainer, pl_module: pl.LightningModule, loss: Tensor) -> None:
        """Stop (every rank) if this step's loss is not finite on any rank."""
        if _any_rank(trainer, ~torch.isfinite(loss.detach()).all()):
            raise NonFiniteError(
                f"non-finite loss at step {trainer.global_step} (epoch {trainer.current_epoch}); stopped on every "
                "rank before updating the weights, checkpoints left as they were and no result written; lower "
                "model.recipe.lr_per_256 or check the data")

    def on_save_checkpoint(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        """Refuse to write a checkpoint whose weights (model, EMA, BN statistics) are not all finite."""
        state = checkpoint.get("state_dict", {})
        bad = next((k for k, v in state.items() if v.is_floating_point() and not bool(torch.isfinite(v).all())), None)
        if _any_rank(trainer, torch.tensor(bad is not None)):
            raise NonFiniteError(
                f"non-finite weights after step {trainer.global_step - 1} ({bad or 'on another rank'}); stopped on "
                "every rank without writing the checkpoint, checkpoints left as they were and no result written; lower "
                "model.recipe.lr_per_256 or check the data")
