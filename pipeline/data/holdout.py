"""Held-out selection data: a seeded part of a training split written as its own split, ``minival``.

A run selects (best checkpoint, ``run.monitor``, early stopping, a grid's ranking) on ``data.val_split`` and
reports on ``data.test_split``; selecting on the reported split would bias what is reported. ImageNet's test
labels are not public and CIFAR-100 has no val split, so ``pipeline shards … --holdout N`` carves N training
samples (or a fraction) into ``minival`` before writing: the training split's shards never contain them.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np

from pipeline.errors import PipelineError

HOLDOUT_SPLIT = "minival"
T = TypeVar("T")


@dataclass(frozen=True)
class Holdout:
    """What to hold out: ``size`` samples (an int) or a fraction in (0, 1) of split ``source``, drawn by ``seed``."""

    size: int | float
    seed: int = 0
    source: str = "train"

    def count(self, available: int) -> int:
        """The number of samples held out of ``available``; a PipelineError unless 1 ≤ it < ``available``."""
        n = self.size if isinstance(self.size, int) else round(self.size * available)
        if not 1 <= n < available:
            raise PipelineError(
                f"--holdout {self.size} holds out {n} of the {available} {self.source} samples; "
                f"it must leave at least one in {self.source} and take at least one")
        return n

    def record(self, count: int, available: int) -> dict[str, Any]:
        """The manifest's ``holdout`` entry: the split written, where from, how many, the request and the seed."""
        return {"split": HOLDOUT_SPLIT, "from": self.source, "count": count, "from_count": available - count,
                "requested": self.size, "seed": self.seed}


def parse_holdout(text: str) -> int | float:
    """``--holdout``'s value: a count (``10000``) or a fraction in (0, 1) (``0.1``); a PipelineError otherwise."""
    try:
        value: int | float = int(text)
    except ValueError:
        value = _fraction(text)
    if value <= 0:
        raise PipelineError(f"--holdout must be a positive sample count or a fraction in (0, 1), not {text}")
    return value


def _fraction(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise PipelineError(f"--holdout must be a sample count or a fraction in (0, 1), not {text!r}") from None
    if not 0 < value < 1:
        raise PipelineError(f"--holdout {text}: a fraction must lie in (0, 1); give a whole number for a count")
    return value


def split_off(records: list[T], holdout: Holdout) -> tuple[list[T], list[T]]:
    """``(kept, held_out)``: ``holdout.count`` of ``records`` drawn by a generator seeded with (seed, ``minival``);
    both keep the records' own order."""
    n = holdout.count(len(records))
    salt = int.from_bytes(hashlib.sha256(HOLDOUT_SPLIT.encode()).digest()[:4], "little")
    chosen = np.random.default_rng([holdout.seed, salt]).permutation(len(records))[:n]
    mask = np.zeros(len(records), dtype=bool)
    mask[chosen] = True
    return ([r for r, out in zip(records, mask, strict=True) if not out],
            [r for r, out in zip(records, mask, strict=True) if out])
