"""Benchmark inputs: ImageNet-like JPEGs made from scikit-learn's two sample photos, as a folder tree and shards.

``make_imagenet_tree`` writes ``<root>/{train,val}/<wnid>/*.JPEG`` (the ILSVRC2012 layout, ~500×375 like most
ImageNet photos: random crops, flips and rescales of the two 427×640 photos, at JPEG quality 90);
``write_bench_shards`` turns that tree into shards with the real ImageNet source and shard writer
(``pipeline shards imagenet``), so the folder reader and the shard loader read the same pixels.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image

from pipeline.data.sharding import JPEG_QUALITY, write_shards
from pipeline.data.sources import get_source

WNIDS = ("n01440764", "n01443537", "n01484850", "n01491361")
SIZES = ((500, 375), (500, 375), (500, 333), (375, 500), (500, 400))  # (width, height), landscape mostly


def make_imagenet_tree(root: Path, train: int = 400, val: int = 100, seed: int = 0) -> Path:
    """Write ``train`` + ``val`` JPEGs under ``root`` (kept when already complete); return ``root``."""
    from sklearn.datasets import load_sample_images

    done = root / ".complete"
    if done.exists() and done.read_text() == f"{train} {val} {seed}":
        return root
    photos = [Image.fromarray(p) for p in load_sample_images().images]  # two 427×640 RGB photos
    rng = np.random.default_rng(seed)
    for split, count in (("train", train), ("val", val)):
        for i in range(count):
            wnid = WNIDS[i % len(WNIDS)]
            folder = root / split / wnid
            folder.mkdir(parents=True, exist_ok=True)
            photo = photos[int(rng.integers(len(photos)))]
            if rng.random() < 0.5:
                photo = photo.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
            w, h = SIZES[int(rng.integers(len(SIZES)))]
            frac = rng.uniform(0.55, 1.0)  # crop a random region of the photo with the target's aspect ratio
            cw = min(photo.width, int(photo.height * w / h)) * frac
            ch = cw * h / w
            x, y = rng.uniform(0, photo.width - cw), rng.uniform(0, photo.height - ch)
            img = photo.resize((w, h), Image.Resampling.BICUBIC, box=(x, y, x + cw, y + ch))
            buf = io.BytesIO()
            img.save(buf, format="JPEG", quality=90)
            name = f"{wnid}_{i}.JPEG" if split == "train" else f"ILSVRC2012_val_{i + 1:08d}.JPEG"
            (folder / name).write_bytes(buf.getvalue())
    done.write_text(f"{train} {val} {seed}")
    return root


def write_bench_shards(tree: Path, work: Path, name: str, max_side: int | None, shard_size: int = 100) -> Path:
    """Shards of ``tree`` through the ImageNet source and the shard writer, under ``work`` (resumes: complete
    shards are kept). The folder is named after ``name`` and the re-encoding quality, so inputs written by
    another default are never resumed."""
    out = work / f"shards-{name}-q{JPEG_QUALITY}"
    write_shards(get_source("imagenet", tree), out, shard_size=shard_size, max_side=max_side)
    return out
