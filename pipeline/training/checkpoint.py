"""Checkpoint I/O: atomic saves (temp file + fsync + rename) and safe loads (``weights_only=True``).

Lightning's own ``TorchCheckpointIO`` serialises into memory and then writes the target in place, so
a preemption mid-write leaves a truncated ``last.ckpt``; here the previous file survives any failed
write. Lightning checkpoints hold only tensors, containers and primitives (our hyper-parameters are
plain values; ``Recipe`` is registered as a safe global), so every load is ``weights_only=True``.
"""

from __future__ import annotations

import os
import pickle
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from lightning_fabric.plugins.io.checkpoint_io import CheckpointIO

from pipeline.atomic import atomic_write
from pipeline.errors import PipelineError


def load_checkpoint(path: str | os.PathLike[str], map_location: Any = "cpu") -> dict[str, Any]:
    """Load a Lightning checkpoint with ``torch.load(weights_only=True)``."""
    with open(path, "rb") as f:
        return torch.load(f, map_location=map_location, weights_only=True)


def _unpickling_reason(err: pickle.UnpicklingError) -> str:
    # torch's message wraps the reason ("WeightsUnpickler error: Unsupported global: GLOBAL x.Y was not …",
    # "… Trying to load unsupported GLOBAL posix.system …") in advice to retry with weights_only=False, which
    # is exactly what must not be done: keep the reason only
    text = str(err)
    lines = [line.strip() for line in text.rpartition("WeightsUnpickler error:")[2].splitlines() if line.strip()]
    advice = ("Weights only load failed", "(", "Please file", "Check the documentation")
    reason = next((line for line in lines if not line.startswith(advice)), type(err).__name__)
    return reason.split(". Please use")[0].rstrip(".")


def read_checkpoint_safely(path: str | os.PathLike[str], *, mmap: bool = False) -> Any:
    """``torch.load(path, weights_only=True)``; pickled code, foreign objects or an unreadable file are a
    one-line PipelineError (``mmap=True``: checks a large checkpoint for the cost of its pickle header)."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except pickle.UnpicklingError as err:
        raise PipelineError(
            f"checkpoint {path} is refused by weights_only loading ({_unpickling_reason(err)}): "
            "only checkpoints of tensors and plain values load, never pickled code or objects") from None
    except (RuntimeError, EOFError, OSError) as err:
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise PipelineError(f"checkpoint {path} cannot be read: {reason}") from None


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
