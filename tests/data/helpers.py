"""Small datasets written in the real on-disk formats, and helpers to read shards back."""

from __future__ import annotations

import io
import pickle
import tarfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
from PIL import Image

from pipeline.data.sources import Record, Source


def jpeg_bytes(color: tuple[int, int, int], size: tuple[int, int] = (24, 16), mode: str = "RGB") -> bytes:
    """A small JPEG of one colour (``size`` is width × height)."""
    buf = io.BytesIO()
    Image.new(mode, size, color if mode == "RGB" else color[0]).save(buf, format="JPEG")
    return buf.getvalue()


def png_bytes(value: int, size: tuple[int, int] = (8, 8)) -> bytes:
    """A small grayscale PNG."""
    buf = io.BytesIO()
    Image.new("L", size, value).save(buf, format="PNG")
    return buf.getvalue()


def read_tar(path: Path) -> dict[str, dict[str, bytes]]:
    """``key → {ext: bytes}`` of one shard, read with plain tarfile (independent of webdataset)."""
    samples: dict[str, dict[str, bytes]] = {}
    with tarfile.open(path) as tar:
        for member in tar.getmembers():
            key, ext = member.name.split(".", 1)
            samples.setdefault(key, {})[ext] = tar.extractfile(member).read()
    return samples


def read_split(root: Path, split: str) -> dict[str, dict[str, bytes]]:
    """All samples of a split (every ``<split>-*.tar`` under ``root``)."""
    samples: dict[str, dict[str, bytes]] = {}
    for path in sorted(root.glob(f"{split}-*.tar")):
        samples.update(read_tar(path))
    return samples


WNIDS = ["n01440764", "n01443537", "n01484850"]  # tench, goldfish, great white shark
# devkit ILSVRC2012_IDs are not in sorted-wnid order: here 1 → the 3rd wnid, 2 → the 1st, 3 → the 2nd
DEVKIT_IDS = {1: "n01484850", 2: "n01440764", 3: "n01443537"}
WORDS = {"n01440764": "tench, Tinca tinca", "n01443537": "goldfish, Carassius auratus",
         "n01484850": "great white shark, white shark"}


def write_imagenet(root: Path, per_class: int = 4, val_per_class: int = 2, flat_val: bool = True) -> dict[str, int]:
    """An ILSVRC2012 tree: train/<wnid>/*.JPEG, val flat + devkit (or in <wnid>/ folders); returns val key → label."""
    from scipy.io import savemat

    for c, wnid in enumerate(WNIDS):
        d = root / "train" / wnid
        d.mkdir(parents=True)
        for i in range(per_class):
            (d / f"{wnid}_{i}.JPEG").write_bytes(jpeg_bytes((40 * c, 10 * i, 200)))
    val_labels: dict[str, int] = {}
    id_of = {w: i for i, w in DEVKIT_IDS.items()}
    ground_truth = []
    for n in range(val_per_class * len(WNIDS)):
        wnid = WNIDS[(n * 2 + 1) % len(WNIDS)]
        key = f"ILSVRC2012_val_{n + 1:08d}"
        folder = root / "val" if flat_val else root / "val" / wnid
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"{key}.JPEG").write_bytes(jpeg_bytes((0, 0, 30 * n)))
        val_labels[key] = WNIDS.index(wnid)
        ground_truth.append(id_of[wnid])
    if flat_val:
        data = root / "ILSVRC2012_devkit_t12" / "data"
        data.mkdir(parents=True)
        (data / "ILSVRC2012_validation_ground_truth.txt").write_text("".join(f"{i}\n" for i in ground_truth))
        dtype = [("ILSVRC2012_ID", "O"), ("WNID", "O"), ("words", "O"), ("gloss", "O"), ("num_children", "O"),
                 ("children", "O"), ("wordnet_height", "O"), ("num_train_images", "O")]
        rows = [(i, w, WORDS[w], "a fish", 0, np.zeros(0), 0, per_class) for i, w in DEVKIT_IDS.items()]
        rows.append((1001, "n00000001", "fish (not a class)", "inner node", 3, np.array([1, 2, 3]), 1, 0))
        savemat(data / "meta.mat", {"synsets": np.array(rows, dtype=dtype)})
    return val_labels


Samples = dict[str, tuple[np.ndarray, np.ndarray]]  # split → (uint8 images N×H×W×3, int labels N)


def write_cifar100(root: Path, n_train: int = 30, n_test: int = 10, samples: Samples | None = None) -> Path:
    """``cifar-100-python/{train,test,meta}`` pickles with the real keys (bytes, as Python 2 wrote them).

    The images are random with labels ``i % 100``, or ``samples``' 32×32×3 images and fine labels.
    """
    folder = root / "cifar-100-python"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    if samples is None:
        samples = {split: (rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8), np.arange(n) % 100)
                   for split, n in (("train", n_train), ("test", n_test))}
    for split, (images, labels) in samples.items():
        n = len(labels)
        obj = {
            b"filenames": [f"img_{i}.png".encode() for i in range(n)],
            b"batch_label": f"{split} batch".encode(),
            b"fine_labels": [int(x) for x in labels],
            b"coarse_labels": [int(x) % 20 for x in labels],
            b"data": images.transpose(0, 3, 1, 2).reshape(n, 3072),  # rows of R, G, B planes
        }
        (folder / split).write_bytes(pickle.dumps(obj))
    meta = {b"fine_label_names": [f"fine{i}".encode() for i in range(100)],
            b"coarse_label_names": [f"coarse{i}".encode() for i in range(20)]}
    (folder / "meta").write_bytes(pickle.dumps(meta))
    return folder


def write_flowers(root: Path, n_images: int = 12, n_classes: int = 3, samples: Samples | None = None
                  ) -> dict[str, list[int]]:
    """``jpg/image_XXXXX.jpg`` + ``imagelabels.mat`` (1-based) + ``setid.mat``; returns the split → ids.

    One-colour images with labels ``i % n_classes``, or ``samples``' images and labels with the splits
    ``train`` / ``val`` / ``test`` as ``trnid`` / ``valid`` / ``tstid``.
    """
    from scipy.io import savemat

    (root / "jpg").mkdir(parents=True)
    if samples is None:
        for i in range(1, n_images + 1):
            (root / "jpg" / f"image_{i:05d}.jpg").write_bytes(jpeg_bytes((20 * i, 0, 0)))
        labels = np.array([[(i % n_classes) + 1 for i in range(n_images)]], dtype=np.uint8)
        ids = {"trnid": [1, 2, 3, 4, 5, 6], "valid": [7, 8, 9], "tstid": [10, 11, 12]}
    else:
        ids, all_labels = {}, []
        for split, field in (("train", "trnid"), ("val", "valid"), ("test", "tstid")):
            images, split_labels = samples[split]
            ids[field] = list(range(len(all_labels) + 1, len(all_labels) + len(split_labels) + 1))
            for i, image in zip(ids[field], images, strict=True):
                Image.fromarray(image).save(root / "jpg" / f"image_{i:05d}.jpg", quality=95)
            all_labels += [int(x) + 1 for x in split_labels]
        labels = np.array([all_labels], dtype=np.uint8)
    savemat(root / "imagelabels.mat", {"labels": labels})
    savemat(root / "setid.mat", {k: np.array([v], dtype=np.uint16) for k, v in ids.items()})
    return ids


class TinySource(Source):
    """A real Source of small grayscale PNGs with chosen split sizes (for stream and DDP tests)."""

    name = "tiny"

    def __init__(self, sizes: dict[str, int], num_classes: int = 5, side: int = 8) -> None:
        super().__init__(None)
        self.sizes, self.num_classes, self.side = sizes, num_classes, side

    @property
    def classes(self) -> list[str]:
        return [f"c{i}" for i in range(self.num_classes)]

    @property
    def split_names(self) -> tuple[str, ...]:
        return tuple(self.sizes)

    def records(self, split: str) -> Iterator[Record]:
        for i in range(self.sizes[split]):
            image = np.full((self.side, self.side), (i * 7) % 256, dtype=np.uint8)
            yield Record(key=f"{split}_{i:04d}", image=image, ext="png", label=i % self.num_classes)
