"""Checkpoints: atomic saves (temp file + fsync + rename), the one safe loader (``weights_only=True``), and what
a checkpoint holds (the network's spec, its raw or EMA weights), for resume, fine-tuning, export and predict.

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
from torch import Tensor

from pipeline.atomic import atomic_write
from pipeline.errors import PipelineError, first_line
from pipeline.scaling import ScaleSpec
from pipeline.scaling.spec import SPEC_KEYS, resolve_spec
from pipeline.training.rundir import BEST, CHECKPOINT_DIR

DEFAULT_CHECKPOINT = f"{BEST}.ckpt"  # the weights a run reports (chosen by run.monitor); last.ckpt is for resuming
MODEL_PREFIX, EMA_PREFIX = "model.", "ema.module."  # ScaledClassifier's state-dict prefixes


def _unpickling_reason(err: pickle.UnpicklingError) -> str:
    # torch's message wraps the reason ("WeightsUnpickler error: Unsupported global: GLOBAL x.Y was not …",
    # "… Trying to load unsupported GLOBAL posix.system …") in advice to retry with weights_only=False, which
    # is exactly what must not be done: keep the reason only
    text = str(err)
    lines = [line.strip() for line in text.rpartition("WeightsUnpickler error:")[2].splitlines() if line.strip()]
    advice = ("Weights only load failed", "(", "Please file", "Check the documentation")
    reason = next((line for line in lines if not line.startswith(advice)), type(err).__name__)
    return reason.split(". Please use")[0].rstrip(".")


def load_checkpoint(path: str | os.PathLike[str], map_location: Any = "cpu", *, mmap: bool = False) -> Any:
    """The one checkpoint loader: ``torch.load(path, weights_only=True)``.

    Pickled code, foreign objects or an unreadable file are a one-line PipelineError (``mmap=True``: checks a
    large checkpoint for the cost of its pickle header).
    """
    try:
        return torch.load(path, map_location=map_location, weights_only=True, mmap=mmap)
    except pickle.UnpicklingError as err:
        raise PipelineError(
            f"checkpoint {path} is refused by weights_only loading ({_unpickling_reason(err)}): "
            "only checkpoints of tensors and plain values load, never pickled code or objects") from None
    except (RuntimeError, EOFError, OSError) as err:
        raise PipelineError(f"checkpoint {path} cannot be read: {first_line(err)}") from None


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


def checkpoint_path(source: str | Path) -> Path:
    """The checkpoint ``source`` names: a file, or a run directory's ``checkpoints/best.ckpt``."""
    path = Path(source)
    if path.is_dir():
        path = path / CHECKPOINT_DIR / DEFAULT_CHECKPOINT
        if not path.is_file():
            raise PipelineError(f"{source} has no {CHECKPOINT_DIR}/{DEFAULT_CHECKPOINT}: is it a finished run "
                                "directory? (or pass a .ckpt path, e.g. its last.ckpt)")
    elif not path.is_file():
        raise PipelineError(f"checkpoint {source} does not exist (give a run directory or a .ckpt file)")
    return path


def read_checkpoint(path: Path) -> dict[str, Any]:
    """A checkpoint loaded with ``weights_only=True``; pickled code or foreign objects are a PipelineError."""
    checkpoint = load_checkpoint(path)
    if not isinstance(checkpoint, dict) or "state_dict" not in checkpoint or "hyper_parameters" not in checkpoint:
        raise PipelineError(f"{path} is not a checkpoint of this pipeline (no state_dict / hyper_parameters)")
    return checkpoint


def checkpoint_spec(checkpoint: dict[str, Any], path: Path) -> tuple[ScaleSpec, int, int]:
    """``(spec, num_classes, in_chans)`` of the network a checkpoint holds, from its saved hyper-parameters."""
    hparams = checkpoint["hyper_parameters"]
    try:
        # checkpoints from before rounding was a spec key were all built with EfficientNet's (TF) rounding
        spec = resolve_spec(**{"rounding": "tf", **{k: hparams[k] for k in SPEC_KEYS if k in hparams}})
    except PipelineError as err:
        raise PipelineError(f"{path}: its saved model keys do not resolve ({err})") from None
    return spec, int(hparams.get("num_classes", 1000)), int(hparams.get("in_chans", 3))


def checkpoint_state(checkpoint: dict[str, Any], ema: bool, path: Path) -> dict[str, Tensor]:
    """The network's weights in a checkpoint: the EMA copy (``ema=True``) or the raw model's."""
    prefix = EMA_PREFIX if ema else MODEL_PREFIX
    state = {k[len(prefix):]: v for k, v in checkpoint["state_dict"].items() if k.startswith(prefix)}
    if not state:
        hint = "; use --model.init_ema false / --no-ema for the raw weights" if ema else ""
        raise PipelineError(f"{path} has no {'EMA ' if ema else ''}weights ({prefix}* keys){hint}")
    return state
