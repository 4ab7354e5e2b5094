"""The prediction writer behind ``pipeline predict``: each sample's top-5 classes on a shard split, as JSON lines.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch.distributed as dist
from pytorch_lightning import LightningModule, Trainer
from pytorch_lightning.callbacks import BasePredictionWriter

from pipeline.atomic import atomic_write_text


class PredictionWriter(BasePredictionWriter):
    """Collect each predict batch's rows; at the epoch's end write them (all ranks) as one JSONL file.

    Args:
        out: output directory; None = the run directory (``trainer.default_root_dir``).
    """

    def __init__(self, out: str | None = None) -> None:
        super().__init__(write_interval="batch")
        self.out = out
        self.rows: list[dict[str, Any]] = []
        self.path: Path | None = None

    def write_on_batch_end(self, trainer: Trainer, pl_module: LightningModule, prediction: Any,
                           batch_indices: Sequence[int] | None, batch: Any, batch_idx: int,
                           dataloader_idx: int) -> None:
        """Turn one ``predict_step`` output (columns) into rows."""
        columns = list(prediction)
        self.rows += [dict(zip(columns, values, strict=True)) for values in zip(*prediction.values(), strict=True)]

    def on_predict_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """Gather the rows of every rank and write them on global rank 0."""
        rows = self.rows
        if dist.is_available() and dist.is_initialized():
            parts: list[list[dict[str, Any]]] = [[] for _ in range(dist.get_world_size())]
            dist.all_gather_object(parts, rows)
            rows = [row for part in parts for row in part]
        split = trainer.datamodule.splits["test"]
        self.path = Path(self.out or trainer.default_root_dir) / f"predictions-{split}.jsonl"
        if trainer.is_global_zero:
            rows.sort(key=lambda row: row["key"])
            atomic_write_text(self.path, "".join(json.dumps(row) + "\n" for row in rows))
            print(f"wrote {len(rows)} predictions to {self.path}")
        self.rows = []
