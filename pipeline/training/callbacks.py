"""Callbacks of a run: its config and complexity at the start, throughput and best accuracies along the way."""

from __future__ import annotations

import time
from typing import Any

import pytorch_lightning as pl
import yaml
from pytorch_lightning.callbacks import Callback
from pytorch_lightning.cli import SaveConfigCallback
from pytorch_lightning.loggers import WandbLogger

from pipeline.training.loggers import BEST_KEYS, configure_wandb_run, run_tags
from pipeline.training.module import ScaledClassifier


def resolved_config(trainer: pl.Trainer) -> dict[str, Any] | None:
    """The run's full resolved config as LightningCLI saves it (its SaveConfigCallback), or None outside the CLI."""
    saver = next((cb for cb in trainer.callbacks if isinstance(cb, SaveConfigCallback)), None)  # type: ignore[attr-defined]
    if saver is None:
        return None
    return yaml.safe_load(saver.parser.dump(saver.config, skip_none=False, skip_check=True))


def _mean(values: list[float]) -> float | None:
    return sum(values) / len(values) if values else None


class RunSummary(Callback):
    """Logs the run's config (spec, dataset, complexity) at fit start; measures throughput and time; tracks bests.

    Throughput and epoch time are hand-measured (Lightning's ThroughputMonitor logs per-step windows,
    not the per-epoch numbers the result record needs). ``elapsed_s`` (fit time) and the bests are
    saved in checkpoints, so they accumulate across requeues; the time since the last checkpoint of an
    interrupted attempt is lost.
    """

    def __init__(self, dataset: str, extra: dict[str, Any] | None = None) -> None:
        self.dataset = dataset
        self.extra = dict(extra or {})
        self.best: dict[str, float] = {}
        self.elapsed_before = 0.0  # fit seconds of earlier attempts (from the checkpoint)
        self.epoch_times: list[float] = []
        self.images_per_s: list[float] = []
        self._fit_start = time.perf_counter()
        self._epoch_start = self._last_batch_end = 0.0
        self._images = 0

    def config(self, trainer: pl.Trainer, module: ScaledClassifier) -> dict[str, Any]:
        """What a run is: the scaling spec, dataset, complexity, world size, global batch, recipe and EMA decay."""
        c = module.complexity
        return {
            **module.spec.record(), "dataset": self.dataset, **self.extra,
            "params": c.params, "flops": c.flops, "acts": c.acts,
            "world_size": trainer.world_size, "global_batch": module.global_batch(),
            "recipe": module.recipe.record(),
            # the EMA's per-update decay, derived from recipe.ema_epochs and this run's updates per epoch
            "ema_decay_per_update": module.ema.decay if module.ema is not None else None,
        }

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Log the run config to every logger (rank 0 only, as loggers do)."""
        self._fit_start = time.perf_counter()
        if trainer.is_global_zero:
            assert isinstance(pl_module, ScaledClassifier)
            config = self.config(trainer, pl_module)
            for logger in trainer.loggers:
                logger.log_hyperparams(config)
                if isinstance(logger, WandbLogger):
                    tags = run_tags(config, self.dataset, str(self.extra.get("sweep")))
                    configure_wandb_run(logger.experiment, tags, resolved_config(trainer))

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Start the epoch clock."""
        self._epoch_start = self._last_batch_end = time.perf_counter()
        self._images = 0

    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        """Count this rank's images."""
        self._images += len(batch[0])
        self._last_batch_end = time.perf_counter()

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Log images/s (training batches only, all ranks) and the epoch time (validation included)."""
        now = time.perf_counter()
        train_s = max(self._last_batch_end - self._epoch_start, 1e-9)
        self.images_per_s.append(self._images * trainer.world_size / train_s)
        self.epoch_times.append(now - self._epoch_start)
        pl_module.log("perf/images_per_s", self.images_per_s[-1], rank_zero_only=True)
        pl_module.log("perf/epoch_time_s", self.epoch_times[-1], rank_zero_only=True)

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Keep the best of each accuracy seen so far (the metrics are already synced across ranks)."""
        if trainer.sanity_checking:
            return
        for key in BEST_KEYS:
            value = trainer.callback_metrics.get(key)
            if value is not None:
                self.best[key] = max(self.best.get(key, 0.0), float(value))

    def elapsed_s(self) -> float:
        """Fit seconds so far, earlier attempts included."""
        return self.elapsed_before + time.perf_counter() - self._fit_start

    def summary(self, trainer: pl.Trainer, module: ScaledClassifier) -> dict[str, Any]:
        """The run's outcome: complexity, best held-out accuracies (fractions, ``val_top1`` …), throughput, time and
        device-hours."""
        c = module.complexity
        elapsed = self.elapsed_s()
        return {
            "params": c.params, "flops": c.flops, "acts": c.acts,
            "val_top1": self.best.get("val/top1"), "val_top5": self.best.get("val/top5"),
            "val_top1_ema": self.best.get("val/top1_ema"), "val_top5_ema": self.best.get("val/top5_ema"),
            "images_per_s": _mean(self.images_per_s), "epoch_time_s": _mean(self.epoch_times),
            "fit_time_s": elapsed, "gpu_hours": elapsed * trainer.world_size / 3600,
            "accelerator": type(trainer.accelerator).__name__.removesuffix("Accelerator").lower(),
            "world_size": trainer.world_size, "epochs": trainer.current_epoch, "global_step": trainer.global_step,
            "skipped": module.skipped_total,
        }

    def state_dict(self) -> dict[str, Any]:
        """Saved in checkpoints: bests, per-epoch timings and fit time so far."""
        return {"best": dict(self.best), "elapsed_s": self.elapsed_s(),
                "epoch_times": list(self.epoch_times), "images_per_s": list(self.images_per_s)}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore what ``state_dict`` saved."""
        self.best = dict(state_dict["best"])
        self.elapsed_before = float(state_dict["elapsed_s"])
        self.epoch_times = list(state_dict["epoch_times"])
        self.images_per_s = list(state_dict["images_per_s"])
        self._fit_start = time.perf_counter()
