"""CIFAR-100 from the ``cifar-100-python/{train,test,meta}`` pickles (the python version of the dataset).

Each pickle holds ``data`` (N×3072 uint8, channel planes R, G, B of 32×32), ``fine_labels``,
``coarse_labels`` and ``filenames``; ``meta`` holds ``fine_label_names`` and ``coarse_label_names``. The
files were pickled by Python 2, so they are read with ``encoding="bytes"`` and keys/names decoded. The
fine label is ``cls``; the coarse one is kept as ``coarse.cls`` (names in the manifest's ``extra``).
CIFAR has no val split: the dataset config evaluates on ``test``.
"""

from __future__ import annotations

import pickle
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.data.sources import Record, Source, require
from pipeline.errors import PipelineError

FOLDER = "cifar-100-python"


def _text(x: Any) -> str:
    return x.decode() if isinstance(x, bytes) else str(x)


def load_pickle(path: Path) -> dict[str, Any]:
    """A CIFAR pickle with its keys decoded to ``str``."""
    with open(path, "rb") as f:
        try:
            obj = pickle.load(f, encoding="bytes")
        except (pickle.UnpicklingError, EOFError, ValueError) as err:
            raise PipelineError(f"{path} is not a CIFAR-100 pickle ({err}); re-extract the dataset") from err
    return {_text(k): v for k, v in obj.items()}


class Cifar100(Source):
    """CIFAR-100 train/test as 32×32 PNGs (arrays encoded in the writer's workers)."""

    name = "cifar100"
    default_shard_size = 2000

    def __init__(self, src: Path | None) -> None:
        if src is None:
            raise PipelineError("cifar100 needs --src <cifar-100-python folder or its parent>")
        src = Path(src)
        super().__init__(src / FOLDER if (src / FOLDER).is_dir() else src)
        self._files: dict[str, dict[str, Any]] = {}

    def _file(self, name: str) -> dict[str, Any]:
        if name not in self._files:
            path = require(self.src / name, f"the CIFAR-100 {name} pickle (cifar-100-python/{name})")
            self._files[name] = load_pickle(path)
        return self._files[name]

    @property
    def classes(self) -> list[str]:
        """The 100 fine label names."""
        return [_text(n) for n in self._file("meta")["fine_label_names"]]

    @property
    def split_names(self) -> tuple[str, ...]:
        """``train``, ``test``."""
        return ("train", "test")

    def records(self, split: str) -> Iterator[Record]:
        """Images as HxWx3 uint8 arrays, keyed ``<split>_NNNNN`` (their row in the pickle)."""
        obj = self._file(split)
        try:
            images = np.asarray(obj["data"], dtype=np.uint8).reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
            fine, coarse = obj["fine_labels"], obj["coarse_labels"]
        except (KeyError, ValueError) as err:
            raise PipelineError(f"{self.src / split} lacks CIFAR-100 fields ({err}); re-extract the dataset") from err
        for i, (image, label, clabel) in enumerate(zip(images, fine, coarse, strict=True)):
            yield Record(key=f"{split}_{i:05d}", image=image, ext="png", label=int(label),
                         extra={"coarse.cls": int(clabel)})

    def describe(self) -> dict[str, Any]:
        """Format and location."""
        return {**super().describe(), "format": "cifar-100-python"}

    def extra(self) -> dict[str, Any]:
        """``coarse_classes``: the 20 superclass names (index = ``coarse.cls``)."""
        return {"coarse_classes": [_text(n) for n in self._file("meta")["coarse_label_names"]]}
