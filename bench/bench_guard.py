"""Cost of the non-finite guard: median training-step time of real 2-rank DDP fits (gloo, CPU) of a narrow
EfficientNet on the digits shards, with and without ``NonFiniteGuard``, alternated, printed as a ratio."""

from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
from pytorch_lightning.callbacks import Callback

from pipeline.data.datamodule import ShardDataModule
from pipeline.data.sharding import write_shards
from pipeline.data.sources import get_source
from pipeline.training.guards import NonFiniteGuard
from pipeline.training.module import ScaledClassifier
from pipeline.training.recipe import Recipe

STEPS, WARMUP, ROUNDS = 40, 5, 3


class StepTimer(Callback):
    """Wall time of each training batch (forward, backward, optimizer step, callbacks)."""

    def __init__(self) -> None:
        self.times: list[float] = []
        self._start = 0.0

    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, i: int) -> None:
        """Start the clock."""
        self._start = time.perf_counter()

    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, i: int
    ) -> None:
        """Stop the clock."""
        self.times.append(time.perf_counter() - self._start)


def step_time(root: Path, guard: bool) -> float:
    """Median step time (s) of one fit, the first WARMUP steps left out."""
    timer = StepTimer()
    model = ScaledClassifier(strategy="w", scale=0.25, base_resolution=32, num_classes=10,
                             recipe=Recipe(opt="adamw", opt_kwargs={}, sched="cosine", warmup_epochs=0,
                                           ema_epochs=None))
    data = ShardDataModule(str(root), resolution=32, batch_size=16, num_workers=0, shuffle_buffer=100)
    trainer = pl.Trainer(accelerator="cpu", devices=2, strategy="ddp", max_steps=STEPS, logger=False,
                         enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                         limit_val_batches=0, use_distributed_sampler=False,
                         callbacks=[timer, *([NonFiniteGuard()] if guard else [])])
    trainer.fit(model, data)
    return statistics.median(timer.times[WARMUP:])


def main() -> None:
    """Print the guard's step-time ratio against the same fit without it (rank 0)."""
    with tempfile.TemporaryDirectory() as tmp:
        write_shards(get_source("digits", None), Path(tmp))
        times: dict[bool, list[float]] = {False: [], True: []}
        for _ in range(ROUNDS):
            for guard in (False, True):
                times[guard].append(step_time(Path(tmp), guard))
    if pl.utilities.rank_zero_only.rank == 0:
        plain, guarded = min(times[False]), min(times[True])
        print(f"step time without guard {plain * 1e3:.1f} ms, with guard {guarded * 1e3:.1f} ms, "
              f"ratio {guarded / plain:.3f} (best of {ROUNDS} fits × {STEPS - WARMUP} steps, 2 gloo ranks)")
