"""Two gloo ranks fit a tiny model with RequeueOnSignal; one rank may send itself a signal after a given step.

    python signal_run.py <out dir> <max steps> [<rank> <signal> <step>]

Run as a script (Lightning's DDP launcher re-executes it for rank 1). Prints ``rank R stopped at step S``.
"""

import os
import signal
import sys
from pathlib import Path

import torch
from pytorch_lightning import Callback, LightningModule, Trainer
from pytorch_lightning.callbacks import ModelCheckpoint
from torch.utils.data import DataLoader, TensorDataset

from pipeline.cluster.requeue import RequeueOnSignal


class Tiny(LightningModule):
    """A linear classifier: enough parameters and optimizer state to resume."""

    def __init__(self) -> None:
        super().__init__()
        self.layer = torch.nn.Linear(4, 2)

    def training_step(self, batch, batch_idx):
        x, y = batch
        return torch.nn.functional.cross_entropy(self.layer(x), y)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1, momentum=0.9)


class SignalAt(Callback):
    """Rank ``rank`` sends itself ``signum`` at the end of global step ``step``."""

    def __init__(self, rank: int, signum: int, step: int) -> None:
        self.rank, self.signum, self.step = rank, signum, step

    def on_train_batch_end(self, trainer, *args) -> None:
        if trainer.global_rank == self.rank and trainer.global_step == self.step:
            os.kill(os.getpid(), self.signum)


def main() -> None:
    out, max_steps = Path(sys.argv[1]), int(sys.argv[2])
    callbacks = [ModelCheckpoint(dirpath=out / "checkpoints", save_last=True)]
    if len(sys.argv) > 3:
        callbacks.append(SignalAt(int(sys.argv[3]), signal.Signals[sys.argv[4]], int(sys.argv[5])))
    callbacks.append(RequeueOnSignal())
    torch.manual_seed(0)
    data = TensorDataset(torch.randn(256, 4), torch.randint(0, 2, (256,)))
    trainer = Trainer(accelerator="cpu", devices=2, strategy="ddp", max_steps=max_steps, callbacks=callbacks,
                      logger=False, enable_progress_bar=False, enable_model_summary=False,
                      default_root_dir=out)
    try:
        trainer.fit(Tiny(), DataLoader(data, batch_size=4), ckpt_path="last")
    finally:
        print(f"rank {trainer.global_rank} stopped at step {trainer.global_step}", flush=True)


if __name__ == "__main__":
    main()
