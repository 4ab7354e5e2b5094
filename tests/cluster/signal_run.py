"""Two gloo ranks fit a tiny model with RequeueOnSignal; one rank may send itself a signal after a given step.

    python signal_run.py <out dir> <max steps> [<rank> <signal> <step | val<step>>]

``<step>``: at that training step's end; ``val<step>``: during the validation that follows that step
(then, and only then, validation runs, every 3 steps). Run as a script (Lightning's DDP launcher
re-executes it for rank 1).
Installs the early signal handler first, as ``pipeline.cli`` does. Prints ``rank R stopped at step S``.
"""

import os
import signal
import sys
from pathlib import Path

from pipeline import preemption

preemption.install()  # before the heavy imports, as pipeline.cli does

import torch  # noqa: E402
from pytorch_lightning import Callback, LightningModule, Trainer  # noqa: E402
from pytorch_lightning.callbacks import ModelCheckpoint  # noqa: E402
from torch.utils.data import DataLoader, TensorDataset  # noqa: E402

from pipeline.training.requeue import RequeueOnSignal  # noqa: E402


class Tiny(LightningModule):
    """A linear classifier: enough parameters and optimizer state to resume."""

    def __init__(self) -> None:
        super().__init__()
        self.layer = torch.nn.Linear(4, 2)

    def training_step(self, batch, batch_idx):
        x, y = batch
        return torch.nn.functional.cross_entropy(self.layer(x), y)

    def validation_step(self, batch, batch_idx):
        x, y = batch
        self.log("val_loss", torch.nn.functional.cross_entropy(self.layer(x), y), sync_dist=True)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1, momentum=0.9)


class SignalAt(Callback):
    """Rank ``rank`` sends itself ``signum`` at the end of global step ``step`` (or in the validation after it)."""

    def __init__(self, rank: int, signum: int, step: str) -> None:
        self.rank, self.signum = rank, signum
        self.in_validation, self.step = step.startswith("val"), int(step.removeprefix("val"))

    def _maybe_signal(self, trainer) -> None:
        if trainer.global_rank == self.rank and trainer.global_step == self.step:
            os.kill(os.getpid(), self.signum)

    def on_train_batch_end(self, trainer, *args) -> None:
        if not self.in_validation:
            self._maybe_signal(trainer)

    def on_validation_batch_end(self, trainer, *args) -> None:
        if self.in_validation and not trainer.sanity_checking:
            self._maybe_signal(trainer)


def main() -> None:
    out, max_steps = Path(sys.argv[1]), int(sys.argv[2])
    callbacks = [ModelCheckpoint(dirpath=out / "checkpoints", save_last=True)]
    signal_at = SignalAt(int(sys.argv[3]), signal.Signals[sys.argv[4]], sys.argv[5]) if len(sys.argv) > 3 else None
    if signal_at is not None:
        callbacks.append(signal_at)
    callbacks.append(RequeueOnSignal())
    torch.manual_seed(0)
    data = TensorDataset(torch.randn(256, 4), torch.randint(0, 2, (256,)))
    trainer = Trainer(accelerator="cpu", devices=2, strategy="ddp", max_steps=max_steps, callbacks=callbacks,
                      val_check_interval=3, limit_val_batches=2, logger=False, enable_progress_bar=False,
                      enable_model_summary=False, default_root_dir=out)
    validate = signal_at is not None and signal_at.in_validation
    try:
        trainer.fit(Tiny(), DataLoader(data, batch_size=4), DataLoader(data, batch_size=4) if validate else None,
                    ckpt_path="last")
    finally:
        print(f"rank {trainer.global_rank} stopped at step {trainer.global_step}", flush=True)


if __name__ == "__main__":
    main()
