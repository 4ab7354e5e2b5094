"""Loggers of a run: W&B (offline unless WANDB_MODE says otherwise) and a CSV file, both in the run directory."""

from __future__ import annotations

import os
from pathlib import Path

from pytorch_lightning.loggers import CSVLogger, Logger, WandbLogger

DEFAULT_WANDB_MODE = "offline"


def wandb_mode() -> str:
    """W&B mode: ``$WANDB_MODE`` when set (online, offline, disabled), else offline (``wandb sync`` later)."""
    return os.environ.get("WANDB_MODE") or DEFAULT_WANDB_MODE


def build_loggers(directory: Path, name: str, group: str, project: str, run_id: str | None) -> list[Logger]:
    """A WandbLogger resuming run ``run_id`` (``resume="allow"``: same run across requeues) and a CSVLogger.

    W&B writes ``directory/wandb/``; the CSV logger writes ``directory/metrics.csv`` and appends on resume.
    No credentials are passed or logged here: W&B reads its key from its own settings when online.
    """
    wandb = WandbLogger(
        name=name, save_dir=str(directory), id=run_id, project=project, group=group,
        resume="allow", mode=wandb_mode(), job_type="train",
    )
    csv = CSVLogger(save_dir=str(directory), name="", version="")
    return [wandb, csv]
