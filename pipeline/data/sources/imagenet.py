"""ImageNet ILSVRC2012 from its on-disk layout.

``<src>/train/<wnid>/*.JPEG``; ``<src>/val/`` either as ``<wnid>/*.JPEG`` folders or flat
``ILSVRC2012_val_NNNNNNNN.JPEG`` with the devkit (``ILSVRC2012_devkit_t12/``, in ``<src>`` or ``<src>/val``):
line i of ``data/ILSVRC2012_validation_ground_truth.txt`` is the ILSVRC2012_ID of val image i, mapped to a
wnid through the ``synsets`` of ``data/meta.mat`` — the IDs are *not* in sorted-wnid order. The class
index is the position in sorted wnid order (what timm/torchvision weights use); class names ("tench,
Tinca tinca", …) come from the devkit when it is present.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from functools import cached_property
from pathlib import Path
from typing import Any

from pipeline.data.sources import Record, Source, require
from pipeline.errors import PipelineError

DEVKIT = "ILSVRC2012_devkit_t12"
GROUND_TRUTH = "data/ILSVRC2012_validation_ground_truth.txt"
META = "data/meta.mat"
JPEG_SUFFIXES = (".jpeg", ".jpg")


def _images(folder: Path) -> list[Path]:
    """JPEG files directly in ``folder``, sorted by name."""
    return sorted(Path(e.path) for e in os.scandir(folder) if e.is_file() and e.name.lower().endswith(JPEG_SUFFIXES))


def read_devkit(devkit: Path) -> tuple[dict[int, str], dict[str, str], list[int]]:
    """``(ILSVRC2012_ID → wnid, wnid → words, val ground-truth IDs in image order)`` from the devkit."""
    from scipy.io import loadmat

    synsets = loadmat(require(devkit / META, "the devkit's meta.mat"), squeeze_me=True)["synsets"]
    leaves = [s for s in synsets if int(s["num_children"]) == 0]  # the 1,000 classes; the rest is the hierarchy
    id_to_wnid = {int(s["ILSVRC2012_ID"]): str(s["WNID"]) for s in leaves}
    words = {str(s["WNID"]): str(s["words"]) for s in leaves}
    truth = require(devkit / GROUND_TRUTH, "the devkit's validation ground truth")
    ids = [int(line) for line in truth.read_text().split()]
    return id_to_wnid, words, ids


class ImageNet(Source):
    """ILSVRC2012 train/val (see the module docstring for the accepted layouts)."""

    name = "imagenet"
    default_shard_size = 1000

    def __init__(self, src: Path | None) -> None:
        if src is None:
            raise PipelineError("imagenet needs --src <ILSVRC2012 root with train/ and val/>")
        super().__init__(Path(src))

    @cached_property
    def wnids(self) -> list[str]:
        """Sorted class folders of ``train/`` (the class order)."""
        train = require(self.src / "train", "ILSVRC2012 train/<wnid>/*.JPEG folders")
        wnids = sorted(e.name for e in os.scandir(train) if e.is_dir())
        if not wnids:
            raise PipelineError(f"{train} has no <wnid> class folders; check --src")
        return wnids

    @cached_property
    def devkit(self) -> Path | None:
        """The devkit folder, if present in ``<src>`` or ``<src>/val``."""
        return next((d for d in (self.src / DEVKIT, self.src / "val" / DEVKIT) if d.is_dir()), None)

    @cached_property
    def _devkit(self) -> tuple[dict[int, str], dict[str, str], list[int]] | None:
        return read_devkit(self.devkit) if self.devkit is not None else None

    @property
    def classes(self) -> list[str]:
        """The wnids in sorted order."""
        return self.wnids

    @property
    def split_names(self) -> tuple[str, ...]:
        """``train``, ``val``."""
        return ("train", "val")

    def records(self, split: str) -> Iterator[Record]:
        """Train or val images as file paths (read by the writer's workers)."""
        folder = require(self.src / split, f"ILSVRC2012 {split}/")
        index = {w: i for i, w in enumerate(self.wnids)}
        class_dirs = [folder / w for w in self.wnids if (folder / w).is_dir()]
        if split == "train" or class_dirs:
            for d in class_dirs:
                for path in _images(d):
                    yield Record(key=path.stem, image=path, ext="jpg", label=index[d.name])
            return
        yield from self._flat_val(folder, index)

    def _flat_val(self, folder: Path, index: dict[str, int]) -> Iterator[Record]:
        if self._devkit is None:
            raise PipelineError(
                f"{folder} is flat but no {DEVKIT}/ was found in {self.src} or {folder}; "
                "unpack ILSVRC2012_devkit_t12.tar.gz there or sort val/ into <wnid>/ folders"
            )
        id_to_wnid, _, ids = self._devkit
        images = _images(folder)
        if len(images) != len(ids):
            raise PipelineError(
                f"{folder} has {len(images)} images but the devkit's ground truth lists {len(ids)}; "
                "the val set or the devkit is incomplete"
            )
        for path, ilsvrc_id in zip(images, ids, strict=True):  # ground-truth line i ↔ ILSVRC2012_val_{i:08d}
            wnid = id_to_wnid.get(ilsvrc_id)
            if wnid not in index:
                raise PipelineError(f"val label {ilsvrc_id} ({wnid}) of {path.name} is not a train/ class folder")
            yield Record(key=path.stem, image=path, ext="jpg", label=index[wnid])

    def describe(self) -> dict[str, Any]:
        """Format, location, and whether val labels came from the devkit."""
        devkit = None if self.devkit is None else str(self.devkit)
        return {**super().describe(), "format": "ILSVRC2012", "devkit": devkit}

    def extra(self) -> dict[str, Any]:
        """``class_names``: the devkit's words per class (in class order), when the devkit is present."""
        if self._devkit is None:
            return {}
        words = self._devkit[1]
        return {"class_names": [words.get(w, w) for w in self.wnids]}
