"""Checkpoint I/O: atomic saves (temp file + fsync + rename) and safe loads (``weights_only=True``).

Lightning's own ``TorchCheckpointIO`` serialises into memory and then writes the target in place, so
a preemption mid-write leaves a truncated ``last.ckpt``; here the previous file survives any failed
write. Lightning checkpoints hold only tensors, containers and primitives (our hyper-parameters are
plain values; ``Recipe`` is registered as a safe global), so every load is ``weights_only=True``.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from lightning_fabric.plugins.io.checkpoint_io import CheckpointIO

from pipeline.io import atomic_write


def load_checkpoint(path: str | os.PathLike[str], map_location: Any = "cpu") -> dict[str, Any]:
    """Load a Lightning checkpoint with ``torch.load(weights_only=True)``."""
    with open(path, "rb") as f:
        return torch.load(f, map_location=map_location, weights_only=True)


class AtomicCheckpointIO(CheckpointIO):
    """A Lightning CheckpointIO plugin whose saves are atomic and whose loads never unpickle code."""

    def save_checkpoint(
        self, checkpoint: dict[str, Any], path: str | os.PathLike[str], storage_options: Any = None
    ) -> None:
        """Write ``checkpoint`` to ``path`` through a temporary file renamed into place."""
        if storage_options is not None:
            raise TypeError(f"{type(self).__name__} takes no storage_options")
        atomic_write(path, lambda f: torch.save(checkpoint, f))

    def load_checkpoint(
        self,
        path: str | os.PathLike[str],
        map_location: Callable[..., Any] | str | None = "cpu",
        weights_only: bool | None = None,
    ) -> dict[str, Any]:
        """Load ``path`` safely; ``weights_only=False`` is refused (no arbitrary unpickling)."""
        if weights_only is False:
            raise ValueError("refusing to load a checkpoint with weights_only=False")
        if not Path(path).is_file():
            raise FileNotFoundError(f"checkpoint file not found: {path}")
        return load_checkpoint(path, map_location=map_location)

    def remove_checkpoint(self, path: str | os.PathLike[str]) -> None:
        """Delete ``path`` if it exists."""
        Path(path).unlink(missing_ok=True)
