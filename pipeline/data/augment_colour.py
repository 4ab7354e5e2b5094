"""Pillow's point and colour ops (``ImageOps`` / ``ImageEnhance``) on uint8 ``[C, H, W]`` tensors, pixel for
pixel: the same look-up tables (applied by ``cv2.LUT``, histograms by ``cv2.calcHist``), integer grey and float32
blends as Pillow. Posterize follows TF (0 bits: black). See :mod:`pipeline.data.augment` for where they are used.
"""

from __future__ import annotations

from typing import Any

import cv2
import numpy as np
import torch

from pipeline.data.image_layout import from_hwc, hwc, planes, to_uint8

_VALUES = np.arange(256)


def _point(img: torch.Tensor, lut: np.ndarray) -> torch.Tensor:
    """Pillow's ``point``: ``lut`` (``[256]`` or one row per channel, uint8) looked up for every pixel, in the
    image's own memory layout (channel planes or channels-last)."""
    layers = planes(img)
    if layers is None:
        table = lut if lut.ndim == 1 else np.ascontiguousarray(lut.T).reshape(256, 1, lut.shape[0])
        return from_hwc(cv2.LUT(hwc(img), table))
    if lut.ndim == 1:
        return torch.from_numpy(cv2.LUT(layers.reshape(-1, layers.shape[2]), lut).reshape(layers.shape))
    return torch.from_numpy(np.stack([cv2.LUT(plane, table) for plane, table in zip(layers, lut, strict=True)]))


def _histograms(img: torch.Tensor) -> np.ndarray:
    """Each channel's 256-bin histogram, ``[C, 256]`` int64."""
    layers = planes(img)
    images, channels = ([layers[c] for c in range(len(layers))], [0] * len(layers)) if layers is not None else (
        [hwc(img)] * img.shape[0], list(range(img.shape[0])))
    return np.stack([cv2.calcHist([im], [c], None, [256], [0, 256]).reshape(256)
                     for im, c in zip(images, channels, strict=True)]).astype(np.int64)


def _blend_lut(base: float, factor: float) -> np.ndarray:
    """Pillow's ``Image.blend`` of a constant ``base`` image with every value: float32, clipped, truncated."""
    v = np.float32(base) + np.float32(factor) * (_VALUES.astype(np.float32) - np.float32(base))
    return np.clip(v, 0, 255).astype(np.uint8)


def _blend(degenerate: torch.Tensor, img: torch.Tensor, factor: float) -> torch.Tensor:
    """Pillow's ``Image.blend(degenerate, img, factor)`` on uint8 (float32 ``d + f·(i − d)``, clipped, truncated);
    ``degenerate`` a float tensor broadcasting to ``img``."""
    return to_uint8(img.contiguous().float().sub_(degenerate).mul_(factor).add_(degenerate).clamp_(0, 255))


def _grey(img: torch.Tensor) -> torch.Tensor:
    """Pillow's RGB → L, ``(19595 R + 38470 G + 7471 B + 2¹⁵) >> 16``, as float ``[H, W]`` (exact: every
    partial sum stays below 2²⁴)."""
    x = img.contiguous().float()  # channel planes: a channels-last image costs ~2× more here
    return (x[0] * 19595).add_(x[1] * 38470).add_(x[2] * 7471).add_(0x8000).mul_(1 / 65536).floor_()


def auto_contrast(img: torch.Tensor, **_: Any) -> torch.Tensor:
    """``ImageOps.autocontrast``: each channel's min…max stretched to 0…255 (truncated)."""
    present = _histograms(img) > 0
    lo, hi = present.argmax(1), 255 - present[:, ::-1].argmax(1)
    scale = 255.0 / np.maximum(hi - lo, 1)
    stretched = np.clip((_VALUES * scale[:, None] - (lo * scale)[:, None]).astype(np.int64), 0, 255)
    return _point(img, np.where((hi > lo)[:, None], stretched, _VALUES).astype(np.uint8))


def equalize(img: torch.Tensor, **_: Any) -> torch.Tensor:
    """``ImageOps.equalize``: each channel's histogram equalised with Pillow's integer steps."""
    h = _histograms(img)
    last = 255 - (h[:, ::-1] > 0).argmax(1)
    step = ((h.sum(1) - h[np.arange(len(h)), last]) // 255)[:, None]  # 0 with a single grey level: unchanged
    before = np.cumsum(h, axis=1) - h
    levels = np.minimum((step // 2 + before) // np.maximum(step, 1), 255)
    return _point(img, np.where(step > 0, levels, _VALUES).astype(np.uint8))


def invert(img: torch.Tensor, **_: Any) -> torch.Tensor:
    """``ImageOps.invert``."""
    return _point(img, (255 - _VALUES).astype(np.uint8))


def posterize(img: torch.Tensor, bits_to_keep: int, **_: Any) -> torch.Tensor:
    """Keep the ``bits_to_keep`` high bits: TF's ``(x >> (8 − b)) << (8 − b)``, so 0 bits is a black image."""
    if bits_to_keep >= 8:
        return img
    return _point(img, (_VALUES & (0xFF << (8 - max(bits_to_keep, 0))) & 0xFF).astype(np.uint8))


def solarize(img: torch.Tensor, thresh: int, **_: Any) -> torch.Tensor:
    """``ImageOps.solarize``: values ≥ ``thresh`` inverted."""
    return _point(img, np.where(thresh > _VALUES, _VALUES, 255 - _VALUES).astype(np.uint8))


def solarize_add(img: torch.Tensor, add: int, thresh: int = 128, **_: Any) -> torch.Tensor:
    """timm's ``solarize_add``: ``add`` to values below ``thresh`` (capped at 255)."""
    return _point(img, np.where(thresh > _VALUES, np.minimum(255, _VALUES + add), _VALUES).astype(np.uint8))


def contrast(img: torch.Tensor, factor: float, **_: Any) -> torch.Tensor:
    """``ImageEnhance.Contrast``: blend with the rounded mean grey level."""
    mean = int(_grey(img).sum(dtype=torch.float64).item() / (img.shape[1] * img.shape[2]) + 0.5)
    return _point(img, _blend_lut(mean, factor))


def brightness(img: torch.Tensor, factor: float, **_: Any) -> torch.Tensor:
    """``ImageEnhance.Brightness``: blend with black."""
    return _point(img, _blend_lut(0.0, factor))


def color(img: torch.Tensor, factor: float, **_: Any) -> torch.Tensor:
    """``ImageEnhance.Color``: blend with the image's grey version."""
    img = img.contiguous()  # once for both steps
    return _blend(_grey(img), img, factor)


def sharpness(img: torch.Tensor, factor: float, **_: Any) -> torch.Tensor:
    """``ImageEnhance.Sharpness``: blend with Pillow's SMOOTH filter (border pixels unfiltered)."""
    x = img.contiguous().float()
    rows = x[:, :, :-2] + x[:, :, 1:-1] + x[:, :, 2:]  # the 3×3 box sum, separably; SMOOTH = (box + 4·centre) / 13
    box = rows[:, :-2] + rows[:, 1:-1] + rows[:, 2:]
    smooth = x.clone()
    smooth[:, 1:-1, 1:-1] = box.add_(x[:, 1:-1, 1:-1], alpha=4).div_(13).add_(0.5).floor_()
    return _blend(smooth, img, factor)
