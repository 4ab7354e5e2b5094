"""Pillow's affine ops (``transform`` with an affine map, ``rotate``) on uint8 ``[C, H, W]`` tensors, as timm's
AutoAugment / RandAugment call them: the same map, pixel centres, fill rule (a pixel whose source point lies
outside the image takes the fill; edge taps are clamped) and draws of a ``resample`` sequence.

Shears and shifts move whole lines (:func:`_shift_lines`: Pillow's filters, near-exact, 0.25–0.35 ms at 224 px);
a rotation is OpenCV's ``warpAffine`` (0.55 ms; Pillow's own costs 1.7 ms and torch's ``grid_sample`` 1.2 ms).
Pixel differences from Pillow are listed in :mod:`pipeline.data.augment`.
"""

from __future__ import annotations

import functools
import math
import random
from typing import Any

import cv2
import numpy as np
import torch
from PIL import Image

from pipeline.data.image_layout import from_hwc, hwc, to_uint8

_CV_MODES = {Image.Resampling.NEAREST: cv2.INTER_NEAREST, Image.Resampling.BILINEAR: cv2.INTER_LINEAR,
             Image.Resampling.BICUBIC: cv2.INTER_CUBIC}


def _affine(img: torch.Tensor, matrix: tuple[float, ...], fillcolor: tuple[int, ...] | int = 0,
            resample: Any = Image.Resampling.BICUBIC) -> torch.Tensor:
    """Pillow's ``transform(size, AFFINE, matrix)``: output pixel centre (x, y) samples the input at
    ``(a x + b y + c, d x + e y + f)``; a sample outside the image takes ``fillcolor``, edge taps are clamped.

    ``resample`` a sequence: one drawn with ``random.choice``, as timm's ops do.
    """
    resample = _draw_filter(resample)
    image = hwc(img)
    h, w, channels = image.shape
    a, b, c, d, e, f = matrix
    # warpAffine maps output pixel indices to input ones: Pillow's pixel-centre map shifted by half a pixel
    to_source = np.array([[a, b, c + (a + b) / 2 - 0.5], [d, e, f + (d + e) / 2 - 0.5]])
    out = cv2.warpAffine(image, to_source, (w, h), flags=_CV_MODES[resample] | cv2.WARP_INVERSE_MAP,
                         borderMode=cv2.BORDER_REPLICATE).reshape(h, w, channels)
    # Pillow's fill test (the source point of the pixel centre outside [0, w) × [0, h)) is a nearest-neighbour
    # warp's in-range test: round(x − ½) ∈ [0, w − 1] ⇔ x ∈ [0, w), here in OpenCV's 1/1024 px fixed point
    outside = cv2.warpAffine(_zeros(h, w), to_source, (w, h), flags=cv2.INTER_NEAREST | cv2.WARP_INVERSE_MAP,
                             borderMode=cv2.BORDER_CONSTANT, borderValue=255)
    return _filled(out, outside, fillcolor)


@functools.lru_cache(maxsize=8)
def _zeros(h: int, w: int) -> np.ndarray:
    """A black ``[h, w]`` uint8 plane (cached: read-only use)."""
    return np.zeros((h, w), np.uint8)


def _filled(out: np.ndarray, outside: np.ndarray, fillcolor: tuple[int, ...] | int) -> torch.Tensor:
    """``out`` (``[h, w, C]``) with ``fillcolor`` where the uint8 mask ``outside`` is set, as a ``[C, h, w]`` tensor."""
    h, w, channels = out.shape
    fill = tuple(np.broadcast_to(np.asarray(fillcolor, np.uint8), (channels,)).tolist())
    cv2.copyTo(_constant(h, w, fill), outside, out)
    return from_hwc(out)


def _draw_filter(resample: Any) -> Image.Resampling:
    """timm's filter argument: a sequence is drawn from with ``random.choice`` (before Pillow runs the op)."""
    return Image.Resampling(random.choice(resample) if isinstance(resample, (list, tuple)) else resample)


@functools.lru_cache(maxsize=8)
def _constant(h: int, w: int, value: tuple[int, ...]) -> np.ndarray:
    """An ``[h, w, C]`` uint8 image of ``value`` (cached: the fill of every affine op of a policy is the same)."""
    out = np.empty((h, w, len(value)), np.uint8)
    out[:] = value
    return out


def _shift_lines(img: torch.Tensor, axis: int, factor: float, offset: float, fillcolor: tuple[int, ...] | int = 0,
                 resample: Any = Image.Resampling.BICUBIC) -> torch.Tensor:
    """Pillow's ``transform`` for a shear or a shift along one axis (1: each row, ShearX / TranslateX; 0: each
    column): pixel p of line i samples the input line at ``p + factor·(i + ½) + offset``; outside it, ``fillcolor``.

    Every line moves as a whole, so an output pixel is its line's 1-D filter over a window gathered per line:
    ~3× cheaper than a bicubic ``warpAffine``. Bicubic is Pillow's affine cubic (a = -1) as four float32 taps,
    truncated as Pillow truncates its doubles, +1e-3 so that a flat region's exact value survives the float32 sums:
    Pillow's pixels except where its double lies within 1e-3 below a whole value (measured: 1 grey level at
    < 0.3 % of pixels). Bilinear is Pillow's own ``a + (b − a)·d`` in doubles with Pillow's d of each pixel (the
    sample position's rounding varies along a line; with one d per line ~3 % of pixels differ, where Pillow's
    double lands just below a whole value and truncates to one less). ``resample`` a sequence: one drawn with
    ``random.choice``, as timm's ops do.
    """
    resample = _draw_filter(resample)
    if resample not in (Image.Resampling.BICUBIC, Image.Resampling.BILINEAR):
        return _affine(img, (1, factor, offset, 0, 1, 0) if axis == 1 else (1, 0, 0, factor, 1, offset), fillcolor,
                       resample)
    image = hwc(img)
    h, w, channels = image.shape
    size, lines = image.shape[axis], image.shape[1 - axis]
    shift = factor * (np.arange(lines) + 0.5) + offset  # Pillow's source x of pixel centre p + ½ is p + ½ + shift
    whole = np.floor(shift)
    # window j of line i is source pixel j + whole_i - 1, from an edge-padded copy (Pillow clamps its taps)
    # padded far enough that every window fits; pixels past the edge only ever feed pixels that get the fill
    pad = int(np.abs(whole).max()) + 3
    padded = cv2.copyMakeBorder(image, *((pad, pad, 0, 0) if axis == 0 else (0, 0, pad, pad)), cv2.BORDER_REPLICATE)
    first = whole.astype(np.int64) - 1 + pad  # padded index of each line's window start
    span = np.arange(size + 3)
    if factor == 0:  # a shift: every line's window is the same slice
        window = padded[:, first[0]:first[0] + size + 3] if axis == 1 else padded[first[0]:first[0] + size + 3]
    elif axis == 1:
        window = np.take(padded.reshape(-1, channels), (first + np.arange(h) * (w + 2 * pad))[:, None] + span, axis=0)
    else:
        window = np.take(padded.reshape(-1, channels), (span * w)[:, None] + (first * w + np.arange(w)), axis=0)
    window = torch.from_numpy(window)
    taps = [window[:, t:t + size] if axis == 1 else window[t:t + size] for t in range(4)]

    def per_line(values: np.ndarray) -> torch.Tensor:
        # a value per row broadcasts over a row's pixels; per column, repeated per channel so that broadcasting
        # is only over rows (torch's fast kernel)
        v = torch.from_numpy(values)
        return v[:, None, None] if axis == 1 else v[None, :, None].expand(-1, -1, channels).contiguous()

    if not (shift - whole).any():  # whole-pixel shifts (and a shear by 0): each pixel is the window's second tap
        result = np.ascontiguousarray(taps[1].numpy())
    elif resample == Image.Resampling.BILINEAR:  # with Pillow's d of each pixel: its rounding varies along a line
        source = (np.arange(size) + 0.5) + shift[:, None] - 0.5
        frac = torch.from_numpy(source - np.floor(source))
        a = taps[1].double()
        out = taps[2].double().sub_(a).mul_((frac if axis == 1 else frac.T)[:, :, None]).add_(a)
        result = to_uint8(out.clamp_(0, 255)).numpy()
    else:
        weights = _bicubic_taps(shift - whole)
        out = taps[0].float().mul_(per_line(weights[0]))
        for t in range(1, 4):
            out.addcmul_(taps[t].float(), per_line(weights[t]))
        result = to_uint8(out.add_(1e-3).clamp_(0, 255)).numpy()
    position = np.arange(size)  # inside: 0 ≤ p + ½ + shift < size
    lo, hi = np.ceil(-shift - 0.5).astype(np.int64), np.ceil(size - shift - 0.5).astype(np.int64)
    outside = (position < lo[:, None]) | (position >= hi[:, None])
    return _filled(result, np.ascontiguousarray(outside if axis == 1 else outside.T).view(np.uint8), fillcolor)


def _bicubic_taps(d: np.ndarray) -> np.ndarray:
    """Pillow's affine bicubic (a = -1) as the weights of the four pixels around samples ``d`` past the second,
    ``[4, len(d)]`` float32."""
    return np.stack([-d + 2 * d * d - d ** 3, 1 - 2 * d * d + d ** 3, d + d * d - d ** 3, -d * d + d ** 3]
                    ).astype(np.float32)


def shear_x(img: torch.Tensor, factor: float, **kwargs: Any) -> torch.Tensor:
    """timm's ``shear_x``."""
    return _shift_lines(img, 1, factor, 0.0, **kwargs)


def shear_y(img: torch.Tensor, factor: float, **kwargs: Any) -> torch.Tensor:
    """timm's ``shear_y``."""
    return _shift_lines(img, 0, factor, 0.0, **kwargs)


def translate_x_abs(img: torch.Tensor, pixels: float, **kwargs: Any) -> torch.Tensor:
    """timm's ``translate_x_abs``."""
    return _shift_lines(img, 1, 0.0, pixels, **kwargs)


def translate_y_abs(img: torch.Tensor, pixels: float, **kwargs: Any) -> torch.Tensor:
    """timm's ``translate_y_abs``."""
    return _shift_lines(img, 0, 0.0, pixels, **kwargs)


def translate_x_rel(img: torch.Tensor, pct: float, **kwargs: Any) -> torch.Tensor:
    """timm's ``translate_x_rel``: a fraction of the width."""
    return translate_x_abs(img, pct * img.shape[2], **kwargs)


def translate_y_rel(img: torch.Tensor, pct: float, **kwargs: Any) -> torch.Tensor:
    """timm's ``translate_y_rel``: a fraction of the height."""
    return translate_y_abs(img, pct * img.shape[1], **kwargs)


def rotate(img: torch.Tensor, degrees: float, **kwargs: Any) -> torch.Tensor:
    """Pillow's ``rotate(degrees)`` about the centre, same size (a multiple of 360°: the image itself)."""
    if degrees % 360 == 0:
        _draw_filter(kwargs.get("resample", Image.Resampling.BICUBIC))  # timm draws it before Pillow returns the copy
        return img
    angle = -math.radians(degrees)
    cos, sin = round(math.cos(angle), 15), round(math.sin(angle), 15)
    cx, cy = img.shape[2] / 2.0, img.shape[1] / 2.0
    matrix = (cos, sin, cos * -cx + sin * -cy + cx, -sin, cos, -sin * -cx + cos * -cy + cy)
    return _affine(img, matrix, **kwargs)
