"""timm's AutoAugment and RandAugment on uint8 ``[3, H, W]`` tensors, per sample in the loader workers.

The policy is timm's own object (``auto_augment_transform`` / ``rand_augment_transform``, as
``create_transform`` builds it: the op set, probabilities, magnitudes, ``mstd`` noise, ``inc1``, ``img_mean``
fill, ``translate_const``): :func:`tensor_policy` swaps each op's PIL function for a tensor one and keeps
everything else, so the random draws are timm's, from the same generators (``random`` for the sub-policy,
probability, magnitude noise, sign and resample; ``numpy.random`` for RandAugment's op choice) and the
loader's per-sample seeding keeps a mid-epoch resume exact.

Pixels against timm's PIL ops (measured by ``tests/data/test_augment.py`` on real photos):

- exact: AutoContrast, Equalize, Invert, Posterize (1–7 bits), Solarize, SolarizeAdd, Brightness, Contrast, Color
  (the same look-up tables, integer grey and float32 blend as Pillow)
  and Sharpness (Pillow's SMOOTH kernel as a separable box sum, border rows and columns kept, rounded alike);
- Rotate, ShearX/Y, TranslateX/Y(Rel): the same affine map, pixel centres and fill rule as Pillow's
  ``transform``, but bicubic through ``grid_sample`` (a = -0.75; Pillow's is -0.5): on photos a mean absolute
  difference of 0.4–0.85 grey levels, at most 13 (sharp edges);
- Posterize with 0 bits (``v0``'s ``('Posterize', 0.8, 2)``): the reference TF result, a black image, where
  Pillow ≥ 11 raises.

Point ops run as one ``numpy.take`` look-up per channel (torch's uint8 indexing and ``where`` cost ~10× more at
224 px); an op that raises becomes an :class:`AugmentationError` naming it: a bug, never a corrupt sample.
"""

from __future__ import annotations

import copy
import functools
import math
import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from timm.data.auto_augment import AugmentOp, AutoAugment, RandAugment
from timm.data.auto_augment import posterize as TIMM_POSTERIZE

from pipeline.errors import PipelineError

_GRID_MODES = {Image.Resampling.NEAREST: "nearest", Image.Resampling.BILINEAR: "bilinear",
               Image.Resampling.BICUBIC: "bicubic"}
_VALUES = np.arange(256)


class AugmentationError(PipelineError):
    """An augmentation op failed on a decoded image: a bug in the augmentation, not bad data (stops the run)."""


def _point(img: torch.Tensor, lut: np.ndarray) -> torch.Tensor:
    """Pillow's ``point``: ``lut`` (``[256]`` or one row per channel, uint8) looked up for every pixel."""
    src = img.contiguous().numpy()
    out = np.empty_like(src)
    for c in range(src.shape[0]):
        np.take(lut if lut.ndim == 1 else lut[c], src[c], out=out[c])
    return torch.from_numpy(out)


def _blend_lut(base: float, factor: float) -> np.ndarray:
    """Pillow's ``Image.blend`` of a constant ``base`` image with every value: float32, clipped, truncated."""
    v = np.float32(base) + np.float32(factor) * (_VALUES.astype(np.float32) - np.float32(base))
    return np.clip(v, 0, 255).astype(np.uint8)


def _blend(degenerate: torch.Tensor, img: torch.Tensor, factor: float) -> torch.Tensor:
    """Pillow's ``Image.blend(degenerate, img, factor)`` on uint8 (float32 ``d + f·(i − d)``, clipped, truncated);
    ``degenerate`` a float tensor broadcasting to ``img``."""
    return _to_uint8(img.float().sub_(degenerate).mul_(factor).add_(degenerate).clamp_(0, 255))


def _to_uint8(x: torch.Tensor) -> torch.Tensor:
    """Float in 0…255 → uint8, truncated (through int16: ~2× faster than a direct float → uint8 cast)."""
    return x.to(torch.int16).to(torch.uint8)


def _grey(img: torch.Tensor) -> torch.Tensor:
    """Pillow's RGB → L, ``(19595 R + 38470 G + 7471 B + 2¹⁵) >> 16``, as float ``[H, W]`` (exact: every
    partial sum stays below 2²⁴)."""
    x = img.float()
    return (x[0] * 19595).add_(x[1] * 38470).add_(x[2] * 7471).add_(0x8000).mul_(1 / 65536).floor_()


def auto_contrast(img: torch.Tensor, **_: Any) -> torch.Tensor:
    """``ImageOps.autocontrast``: each channel's min…max stretched to 0…255 (truncated)."""
    lo, hi = (t.tolist() for t in img.reshape(img.shape[0], -1).aminmax(dim=1))
    lut = np.empty((img.shape[0], 256), np.uint8)
    for c, (a, b) in enumerate(zip(lo, hi, strict=True)):
        scale = 255.0 / (b - a) if b > a else 1.0
        lut[c] = np.clip((_VALUES * scale - a * scale if b > a else _VALUES).astype(np.int64), 0, 255)
    return _point(img, lut)


def equalize(img: torch.Tensor, **_: Any) -> torch.Tensor:
    """``ImageOps.equalize``: each channel's histogram equalised with Pillow's integer steps."""
    lut = np.empty((img.shape[0], 256), np.uint8)
    for c in range(img.shape[0]):
        h = torch.bincount(img[c].reshape(-1), minlength=256).numpy()
        nonzero = h[h > 0]
        step = (int(nonzero.sum()) - int(nonzero[-1])) // 255 if len(nonzero) > 1 else 0
        if step == 0:
            lut[c] = _VALUES
        else:
            before = np.concatenate(([0], np.cumsum(h)[:-1]))
            lut[c] = np.minimum((step // 2 + before) // step, 255)
    return _point(img, lut)


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
    return _blend(_grey(img), img, factor)


def sharpness(img: torch.Tensor, factor: float, **_: Any) -> torch.Tensor:
    """``ImageEnhance.Sharpness``: blend with Pillow's SMOOTH filter (border pixels unfiltered)."""
    x = img.float()
    rows = x[:, :, :-2] + x[:, :, 1:-1] + x[:, :, 2:]  # the 3×3 box sum, separably; SMOOTH = (box + 4·centre) / 13
    box = rows[:, :-2] + rows[:, 1:-1] + rows[:, 2:]
    smooth = x.clone()
    smooth[:, 1:-1, 1:-1] = box.add_(x[:, 1:-1, 1:-1], alpha=4).div_(13).add_(0.5).floor_()
    return _blend(smooth, img, factor)


def _affine(img: torch.Tensor, matrix: tuple[float, ...], fillcolor: tuple[int, ...] | int = 0,
            resample: Any = Image.Resampling.BICUBIC) -> torch.Tensor:
    """Pillow's ``transform(size, AFFINE, matrix)``: output pixel centre (x, y) samples the input at
    ``(a x + b y + c, d x + e y + f)``; samples outside the image take ``fillcolor``.

    ``resample`` a sequence: one drawn with ``random.choice``, as timm's ops do.
    """
    if isinstance(resample, (list, tuple)):
        resample = random.choice(resample)
    _, h, w = img.shape
    a, b, c, d, e, f = matrix
    xs, ys = _centres(h, w)
    grid = torch.empty(1, h, w, 2)  # in grid_sample's −1…1 units: 2 · (pixel position) / size − 1
    torch.add(xs * (2 * a / w), ys * (2 * b / w) + (2 * c / w - 1), out=grid[0, :, :, 0])
    torch.add(xs * (2 * d / h), ys * (2 * e / h) + (2 * f / h - 1), out=grid[0, :, :, 1])
    outside = ((grid < -1) | (grid >= 1)).any(dim=-1)[0]  # Pillow's test: x < 0 or x ≥ width (or y)
    out = F.grid_sample(img.float().unsqueeze(0), grid, mode=_GRID_MODES[Image.Resampling(resample)],
                        padding_mode="border", align_corners=False)[0]
    fill = torch.tensor(fillcolor, dtype=torch.float32).expand(img.shape[0]).view(-1, 1, 1)
    return _to_uint8(torch.where(outside, fill, out.add_(0.5).clamp_(0, 255)))


@functools.lru_cache(maxsize=8)
def _centres(h: int, w: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Pixel-centre coordinates: ``[w]`` x and ``[h, 1]`` y (cached: the same few sizes every sample)."""
    return torch.arange(w, dtype=torch.float32).add_(0.5), torch.arange(h, dtype=torch.float32).add_(0.5)[:, None]


def shear_x(img: torch.Tensor, factor: float, **kwargs: Any) -> torch.Tensor:
    """timm's ``shear_x``."""
    return _affine(img, (1, factor, 0, 0, 1, 0), **kwargs)


def shear_y(img: torch.Tensor, factor: float, **kwargs: Any) -> torch.Tensor:
    """timm's ``shear_y``."""
    return _affine(img, (1, 0, 0, factor, 1, 0), **kwargs)


def translate_x_abs(img: torch.Tensor, pixels: float, **kwargs: Any) -> torch.Tensor:
    """timm's ``translate_x_abs``."""
    return _affine(img, (1, 0, pixels, 0, 1, 0), **kwargs)


def translate_y_abs(img: torch.Tensor, pixels: float, **kwargs: Any) -> torch.Tensor:
    """timm's ``translate_y_abs``."""
    return _affine(img, (1, 0, 0, 0, 1, pixels), **kwargs)


def translate_x_rel(img: torch.Tensor, pct: float, **kwargs: Any) -> torch.Tensor:
    """timm's ``translate_x_rel``: a fraction of the width."""
    return translate_x_abs(img, pct * img.shape[2], **kwargs)


def translate_y_rel(img: torch.Tensor, pct: float, **kwargs: Any) -> torch.Tensor:
    """timm's ``translate_y_rel``: a fraction of the height."""
    return translate_y_abs(img, pct * img.shape[1], **kwargs)


def rotate(img: torch.Tensor, degrees: float, **kwargs: Any) -> torch.Tensor:
    """Pillow's ``rotate(degrees)`` about the centre, same size (a multiple of 360°: the image itself)."""
    if degrees % 360 == 0:
        if isinstance(kwargs.get("resample"), (list, tuple)):
            random.choice(kwargs["resample"])  # timm draws the filter before Pillow returns the copy
        return img
    angle = -math.radians(degrees)
    cos, sin = round(math.cos(angle), 15), round(math.sin(angle), 15)
    cx, cy = img.shape[2] / 2.0, img.shape[1] / 2.0
    matrix = (cos, sin, cos * -cx + sin * -cy + cx, -sin, cos, -sin * -cx + cos * -cy + cy)
    return _affine(img, matrix, **kwargs)


TENSOR_OPS: dict[str, Callable[..., torch.Tensor]] = {
    "AutoContrast": auto_contrast, "Equalize": equalize, "Invert": invert, "Rotate": rotate,
    "Posterize": posterize, "PosterizeIncreasing": posterize, "PosterizeOriginal": posterize,
    "Solarize": solarize, "SolarizeIncreasing": solarize, "SolarizeAdd": solarize_add,
    "Color": color, "ColorIncreasing": color, "Contrast": contrast, "ContrastIncreasing": contrast,
    "Brightness": brightness, "BrightnessIncreasing": brightness,
    "Sharpness": sharpness, "SharpnessIncreasing": sharpness, "ShearX": shear_x, "ShearY": shear_y,
    "TranslateX": translate_x_abs, "TranslateY": translate_y_abs,
    "TranslateXRel": translate_x_rel, "TranslateYRel": translate_y_rel,
}


@dataclass(frozen=True)
class TensorOp:
    """One op's tensor function in place of timm's PIL one; a failure raises :class:`AugmentationError`."""

    name: str
    magnitude: float
    fn: Callable[..., torch.Tensor]

    def __call__(self, img: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        """Apply the op with timm's drawn arguments."""
        try:
            return self.fn(img, *args, **kwargs)
        except Exception as err:
            raise AugmentationError(
                f"augmentation op {self.name} (magnitude {self.magnitude}, arguments {args}) failed on a "
                f"{tuple(img.shape)} {img.dtype} image: {type(err).__name__}: {err} (a bug in the augmentation, "
                "not bad data)") from err


def policy_ops(policy: AutoAugment | RandAugment) -> list[AugmentOp]:
    """Every op of a timm policy (RandAugment's list, or AutoAugment's sub-policies flattened)."""
    if isinstance(policy, RandAugment):
        return list(policy.ops)
    return [op for sub in policy.policy for op in sub]


def tensor_policy(policy: Any) -> AutoAugment | RandAugment | None:
    """A copy of timm's ``policy`` whose ops work on uint8 ``[3, H, W]`` tensors; None when it is not an
    AutoAugment / RandAugment or has an op without a tensor version (AugMix, ``3a``: they stay on PIL)."""
    if not isinstance(policy, (AutoAugment, RandAugment)) or any(
            op.name not in TENSOR_OPS for op in policy_ops(policy)):
        return None
    policy = copy.deepcopy(policy)
    for op in policy_ops(policy):
        op.aug_fn = TensorOp(op.name, op.magnitude, TENSOR_OPS[op.name])
    return policy


def _pil_posterize(img: Image.Image, bits_to_keep: int, **_: Any) -> Image.Image:
    """timm's PIL ``posterize`` with TF's 0 bits (a black image) where Pillow ≥ 11 raises."""
    return Image.new(img.mode, img.size) if bits_to_keep <= 0 else TIMM_POSTERIZE(img, bits_to_keep)


def reference_policy(policy: AutoAugment | RandAugment) -> AutoAugment | RandAugment:
    """A copy of timm's PIL ``policy`` with TF's posterize semantics: the reference :func:`tensor_policy` is
    measured against (and the benchmark's peer, so both sides train the same policy)."""
    policy = copy.deepcopy(policy)
    for op in policy_ops(policy):
        if op.aug_fn is TIMM_POSTERIZE:
            op.aug_fn = _pil_posterize
    return policy
