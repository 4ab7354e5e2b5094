"""Oxford Flowers-102: ``jpg/image_XXXXX.jpg`` + ``imagelabels.mat`` + ``setid.mat``.

``imagelabels.mat`` holds ``labels`` (1..102, one per image, image i ↔ ``image_{i:05d}.jpg``);
``setid.mat`` holds the 1-based image ids of ``trnid`` / ``valid`` / ``tstid`` (1,020 / 1,020 / 6,149
in the real set). Labels are stored 0-based. The files name no classes, so class i is called by its
1-based label in the files (``"1"`` … ``"102"``).

A fourth split, ``trainval`` (trnid + valid, 2,040 images), is the standard transfer protocol's training set
(Table 6 of the EfficientNet paper: 2,040 train / 6,149 test); it is written as its own split so the data
module keeps one split per role.
"""

from __future__ import annotations

from collections.abc import Iterator
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.data.sources import Record, Source, require
from pipeline.errors import PipelineError

SPLITS = {"train": ("trnid",), "val": ("valid",), "test": ("tstid",), "trainval": ("trnid", "valid")}


class Flowers102(Source):
    """Flowers-102 with its official train/val/test split."""

    name = "flowers102"
    default_shard_size = 1000

    def __init__(self, src: Path | None) -> None:
        if src is None:
            raise PipelineError("flowers102 needs --src <folder with jpg/, imagelabels.mat, setid.mat>")
        super().__init__(Path(src))

    @cached_property
    def _mats(self) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        from scipy.io import loadmat

        labels = loadmat(require(self.src / "imagelabels.mat", "imagelabels.mat"))["labels"].ravel().astype(int)
        setid = loadmat(require(self.src / "setid.mat", "setid.mat"))
        ids = {name: np.concatenate([setid[f].ravel() for f in fields]).astype(int) for name, fields in SPLITS.items()}
        return labels, ids

    @property
    def classes(self) -> list[str]:
        """``"1"`` … ``"102"``: the 1-based labels of the files, in class-index order."""
        labels, _ = self._mats
        return [str(i) for i in range(1, int(labels.max()) + 1)]

    @property
    def split_names(self) -> tuple[str, ...]:
        """``train``, ``val``, ``test`` and ``trainval`` (train + val)."""
        return tuple(SPLITS)

    def records(self, split: str) -> Iterator[Record]:
        """The split's images as file paths, labels made 0-based."""
        labels, ids = self._mats
        folder = require(self.src / "jpg", "the jpg/ folder of image_XXXXX.jpg files")
        for image_id in ids[split]:
            if not 1 <= image_id <= len(labels):
                raise PipelineError(f"setid.mat lists image {image_id}, but imagelabels.mat has {len(labels)} labels")
            key = f"image_{image_id:05d}"
            yield Record(key=key, image=folder / f"{key}.jpg", ext="jpg", label=int(labels[image_id - 1]) - 1)

    def describe(self) -> dict[str, Any]:
        """Format and location."""
        return {**super().describe(), "format": "flowers102 (jpg/ + imagelabels.mat + setid.mat)"}
