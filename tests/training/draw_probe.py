"""A callback a test adds to a real ``pipeline fit``: records, per rank and step, what the training step drew.

Hooks read what timm's DropPath layers did (output = input / keep × mask, so the mask is ``output != 0``
wherever the input is non-zero); nothing of the run is replaced.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from timm.layers import DropPath


class RecordDraws(pl.Callback):
    """Saves ``draws-rank<r>.pt``: per training step, the drop-path masks of every DropPath layer."""

    def __init__(self, out_dir: str) -> None:
        self.out_dir = Path(out_dir)
        self.steps: list[list[torch.Tensor]] = []

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        for layer in pl_module.model.modules():
            if isinstance(layer, DropPath):
                layer.register_forward_hook(self._record)

    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any,
                             batch_idx: int) -> None:
        self.steps.append([])

    def _record(self, layer: DropPath, inputs: tuple[torch.Tensor], output: torch.Tensor) -> None:
        if layer.training and self.steps:
            kept = (output != 0).flatten(1).any(1) | (inputs[0] == 0).flatten(1).all(1)
            self.steps[-1].append(kept.cpu())

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.out_dir.mkdir(parents=True, exist_ok=True)
        torch.save([torch.stack(step) for step in self.steps], self.out_dir / f"draws-rank{trainer.global_rank}.pt")
