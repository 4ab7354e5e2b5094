"""scikit-learn's embedded digits: 1,797 real 8×8 handwritten digits that ship inside the package (no download).

Split (stratified, fixed ``random_state=0`` so it never depends on the writer's ``--seed``):
train 1,437 / val 180 / test 180.
"""

from __future__ import annotations

from collections.abc import Iterator
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.data.sources import Record, Source

SPLIT_SIZES = {"train": 1437, "val": 180, "test": 180}


class Digits(Source):
    """``sklearn.datasets.load_digits`` as 8×8 grayscale PNGs (pixel values 0..16 scaled to 0..255)."""

    name = "digits"
    default_shard_size = 200

    def __init__(self, src: Path | None = None) -> None:
        super().__init__(None)  # the data is inside scikit-learn; --src is not used

    @cached_property
    def _data(self) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
        from sklearn.datasets import load_digits
        from sklearn.model_selection import train_test_split

        digits = load_digits()
        images = np.round(digits.images * (255.0 / 16.0)).astype(np.uint8)
        index = np.arange(len(images))
        train, rest = train_test_split(
            index, test_size=SPLIT_SIZES["val"] + SPLIT_SIZES["test"], stratify=digits.target, random_state=0
        )
        val, test = train_test_split(rest, test_size=SPLIT_SIZES["test"], stratify=digits.target[rest], random_state=0)
        return images, digits.target, {"train": np.sort(train), "val": np.sort(val), "test": np.sort(test)}

    @property
    def classes(self) -> list[str]:
        """The ten digit names ``"0"`` … ``"9"``."""
        return [str(i) for i in range(10)]

    @property
    def split_names(self) -> tuple[str, ...]:
        """``train``, ``val``, ``test``."""
        return tuple(SPLIT_SIZES)

    def records(self, split: str) -> Iterator[Record]:
        """The split's digits as uint8 arrays, keyed by their index in ``load_digits``."""
        images, targets, splits = self._data
        for i in splits[split]:
            yield Record(key=f"digit_{i:04d}", image=images[i], ext="png", label=int(targets[i]))

    def describe(self) -> dict[str, Any]:
        """The format, and the scikit-learn version the images came from."""
        import sklearn

        return {"format": "sklearn.datasets.load_digits", "src": None, "sklearn": sklearn.__version__}
