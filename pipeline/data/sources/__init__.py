"""Dataset sources: each reads one dataset's real on-disk format and only lists its samples per split.

Everything else (shuffling, parallel encoding, resizing, resume, progress, the manifest) is the one writer
loop in :mod:`pipeline.data.sharding`, so every dataset gets the same guarantees.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.errors import PipelineError


@dataclass(frozen=True)
class Record:
    """One source sample.

    ``image`` is encoded bytes, a file path (read in a writer worker, so ImageNet's 1.28 M JPEGs never sit
    in memory together) or a uint8 array HxW or HxWx3 (encoded to PNG in a writer worker, so CIFAR's
    60,000 arrays are encoded in parallel). ``ext`` is the stored extension (``jpg`` or ``png``); ``extra``
    holds further integer fields stored beside ``cls`` (e.g. CIFAR-100's ``coarse.cls``).
    """

    key: str
    image: bytes | Path | np.ndarray
    ext: str
    label: int
    extra: dict[str, int] = field(default_factory=dict)


class Source:
    """A dataset on disk: its class names, split names and the records of each split."""

    name: str = ""
    default_shard_size: int = 1000

    def __init__(self, src: Path | None) -> None:
        self.src = src

    @property
    def classes(self) -> list[str]:
        """Class names; class index i is ``classes[i]``."""
        raise NotImplementedError

    @property
    def split_names(self) -> tuple[str, ...]:
        """Split names this source provides, e.g. ``("train", "val")``."""
        raise NotImplementedError

    def records(self, split: str) -> Iterator[Record]:
        """The samples of ``split`` in the source's own (deterministic) order."""
        raise NotImplementedError

    def describe(self) -> dict[str, Any]:
        """What the manifest records about the source (format and location)."""
        return {"format": self.name, "src": None if self.src is None else str(self.src)}

    def extra(self) -> dict[str, Any]:
        """Dataset-specific manifest entries (e.g. CIFAR-100's coarse class names)."""
        return {}


def require(path: Path, what: str) -> Path:
    """``path`` if it exists, else a PipelineError naming what was expected there."""
    if not path.exists():
        raise PipelineError(f"{path} does not exist: expected {what}; check --src")
    return path


def _registry() -> dict[str, Callable[[Path | None], Source]]:
    from pipeline.data.sources.cifar100 import Cifar100
    from pipeline.data.sources.digits import Digits
    from pipeline.data.sources.flowers102 import Flowers102
    from pipeline.data.sources.imagenet import ImageNet

    return {c.name: c for c in (ImageNet, Cifar100, Flowers102, Digits)}


DATASETS = ("imagenet", "cifar100", "flowers102", "digits")


def get_source(dataset: str, src: Path | None) -> Source:
    """The source for ``dataset`` reading from ``src``; a PipelineError for an unknown dataset name."""
    registry = _registry()
    if dataset not in registry:
        raise PipelineError(f"unknown dataset {dataset!r}; choose one of {', '.join(DATASETS)}")
    return registry[dataset](src)
