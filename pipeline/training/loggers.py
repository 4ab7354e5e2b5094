"""Loggers of a run: W&B (offline unless WANDB_MODE says otherwise) and a CSV file, both in the run directory."""

from __future__ import annotations

import csv
import os
from pathlib import Path
from typing import Any

from pytorch_lightning.loggers import CSVLogger, Logger, WandbLogger
from pytorch_lightning.loggers.csv_logs import ExperimentWriter
from pytorch_lightning.loggers.logger import rank_zero_experiment

DEFAULT_WANDB_MODE = "offline"


def wandb_mode() -> str:
    """W&B mode: ``$WANDB_MODE`` when set (online, offline, disabled), else offline (``wandb sync`` later)."""
    return os.environ.get("WANDB_MODE") or DEFAULT_WANDB_MODE


class _AppendingWriter(ExperimentWriter):
    """Lightning's CSV writer deletes an existing metrics.csv; this one keeps it so a resumed run appends."""

    def _check_log_dir_exists(self) -> None:
        if self._fs.isfile(self.metrics_file_path):
            with self._fs.open(self.metrics_file_path, "r", newline="") as f:
                self.metrics_keys = next(csv.reader(f), [])  # earlier columns stay in the header


class ResumableCSVLogger(CSVLogger):
    """A CSVLogger whose ``metrics.csv`` survives restarts (requeues, ``--ckpt_path last``)."""

    @property
    @rank_zero_experiment
    def experiment(self) -> ExperimentWriter:
        """The appending writer (created on first use, rank 0 only)."""
        if self._experiment is None:
            self._fs.makedirs(self.root_dir, exist_ok=True)
            self._experiment = _AppendingWriter(log_dir=self.log_dir)
        return self._experiment


# The accuracies a run keeps the best of: RunSummary's bests (result.json), best.ckpt's possible monitors,
# and the W&B summaries shown as their best value while the run trains (not the last epoch's).
BEST_KEYS = ("val/top1", "val/top5", "val/top1_ema", "val/top5_ema")


def run_tags(spec: dict[str, Any], dataset: str, sweep: str) -> list[str]:
    """W&B tags of a run: its strategy, ``phi=…`` or ``s=…`` (or the variant), the dataset and the sweep."""
    point = (f"phi={spec['phi']:g}" if spec.get("phi") is not None else
             f"s={spec['s']:g}" if spec.get("s") is not None else str(spec.get("name")))
    return [str(spec.get("strategy")), point, f"dataset={dataset}", f"sweep={sweep}"]


def configure_wandb_run(run: Any, tags: list[str], resolved: dict[str, Any] | None) -> None:
    """Best-so-far summaries (``define_metric(summary="max")``), tags, and the full resolved config (once).

    The resolved config (what ``config.yaml`` holds: every key of ``pipeline fit``) goes under ``cli``,
    beside the flat spec / complexity keys the run config already has.
    """
    for key in BEST_KEYS:
        run.define_metric(key, summary="max")
    run.tags = tuple(dict.fromkeys([*run.tags, *tags]))
    if resolved is not None:
        run.config.update({"cli": resolved}, allow_val_change=True)


def build_loggers(directory: Path, name: str, group: str, project: str, run_id: str | None) -> list[Logger]:
    """A WandbLogger resuming run ``run_id`` (``resume="allow"``: same run across requeues) and a CSVLogger.

    W&B writes ``directory/wandb/``; the CSV logger writes ``directory/metrics.csv`` and appends on resume.
    No credentials are passed or logged here: W&B reads its key from its own settings when online.
    """
    wandb = WandbLogger(
        name=name, save_dir=str(directory), id=run_id, project=project, group=group,
        resume="allow", mode=wandb_mode(), job_type="train",
    )
    return [wandb, ResumableCSVLogger(save_dir=str(directory), name="", version="")]
