"""Image transforms (timm's ``create_transform``) and the sample decoder that feeds them.

Train: RandomResizedCrop + horizontal flip + optional AutoAugment / RandAugment (timm strings such as
``"original"`` or ``"rand-m9-mstd0.5"``; colour jitter otherwise), eval: resize the shorter side to
``resolution / crop_pct`` then center-crop ``resolution``. Both normalize with the ImageNet mean/std that
timm's pretrained weights expect.
"""

from __future__ import annotations

import io
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from PIL import Image
from timm.data import create_transform

IMAGE_EXTS = ("jpg", "jpeg", "png")


def build_transform(
    resolution: int,
    *,
    train: bool,
    auto_augment: str | None = None,
    crop_pct: float = 0.875,
    interpolation: str = "bicubic",
    scale: tuple[float, float] = (0.08, 1.0),
    hflip: float = 0.5,
    color_jitter: float | None = 0.4,
) -> Callable[[Image.Image], torch.Tensor]:
    """timm's transform for ``resolution`` (train: random crop + flip + augment; eval: resize + center crop)."""
    if train:
        return create_transform(
            resolution, is_training=True, auto_augment=auto_augment, interpolation=interpolation,
            scale=tuple(scale), hflip=hflip, color_jitter=color_jitter or 0.0,
        )
    return create_transform(resolution, is_training=False, crop_pct=crop_pct, interpolation=interpolation)


def decode_side(resolution: int, crop_pct: float) -> int:
    """Shorter side a decoded image needs: the eval resize target ``floor(resolution / crop_pct)`` (as timm).

    Training uses the same bound: a RandomResizedCrop of a small area is then upsampled from a DCT-scaled
    image rather than the full-size one; that is the accuracy/speed trade every fast loader makes
    (the shards' ``--max-side`` makes the same trade once, at write time).
    """
    return math.floor(resolution / crop_pct)


def open_image(data: bytes, min_side: int) -> Image.Image:
    """Decode image bytes to RGB; a JPEG is decoded in PIL's draft mode at 1/2, 1/4 or 1/8 scale when the
    result still has at least ``min_side`` pixels on both sides (most of the decode cost, skipped)."""
    img = Image.open(io.BytesIO(data))
    if img.format == "JPEG":
        img.draft("RGB", (min_side, min_side))
    return img.convert("RGB")  # also grayscale / palette / CMYK → RGB


@dataclass(frozen=True)
class SampleDecoder:
    """Turns a webdataset sample dict (``jpg``/``png`` bytes, ``cls``) into ``(image tensor, label)``.

    Raises on a corrupt sample (undecodable image, missing or non-integer ``cls``, no image); the stream
    counts those and skips them.
    """

    transform: Callable[[Image.Image], torch.Tensor]
    min_side: int

    def __call__(self, sample: dict[str, Any]) -> tuple[torch.Tensor, int]:
        """Decode and transform one sample."""
        if "cls" not in sample:
            raise KeyError(f"sample {sample.get('__key__')!r} has no cls")
        label = int(sample["cls"])
        ext = next((e for e in IMAGE_EXTS if e in sample), None)
        if ext is None:
            raise KeyError(f"sample {sample.get('__key__')!r} has no image ({'/'.join(IMAGE_EXTS)})")
        return self.transform(open_image(sample[ext], self.min_side)), label
