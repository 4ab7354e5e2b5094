"""scikit-learn's digits written in CIFAR-100's and Flowers-102's on-disk formats (transfer targets for tests)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from pipeline.data.sources import get_source
from tests.data.helpers import Samples, write_cifar100, write_flowers


def digits_samples(side: int = 32) -> Samples:
    """The digits splits as ``side``×``side``×3 uint8 images (bicubic upsampling, grey in every channel)."""
    source = get_source("digits", None)
    samples = {}
    for split in source.split_names:
        records = list(source.records(split))
        images = [np.asarray(Image.fromarray(r.image).resize((side, side), Image.BICUBIC)) for r in records]
        samples[split] = (np.stack([np.stack([im] * 3, axis=-1) for im in images]),
                          np.array([r.label for r in records]))
    return samples


def write_digits_as_cifar100(root: Path) -> Path:
    """Digits as ``cifar-100-python`` pickles: train = digits train, test = digits val + test (360)."""
    samples = digits_samples(32)
    test = [np.concatenate(parts) for parts in zip(samples["val"], samples["test"], strict=True)]
    return write_cifar100(root, samples={"train": samples["train"], "test": (test[0], test[1])})


def write_digits_as_flowers(root: Path) -> dict[str, list[int]]:
    """Digits as Flowers-102 files (``jpg/``, ``imagelabels.mat``, ``setid.mat``): train / val / test kept."""
    return write_flowers(root, samples=digits_samples(32))
