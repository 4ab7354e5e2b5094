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
- ShearX/Y, TranslateX/Y(Rel): Pillow's affine map, pixel centres, fill rule (a pixel whose source point lies
  outside the image takes the fill; edge taps are clamped) and filters, one line at a time (:func:`_shift_lines`):
  bilinear and whole-pixel shifts exact, bicubic ≤ 1 grey level at < 0.3 % of pixels (float32 taps);
- Rotate: the same map and fill rule, resampled by OpenCV's ``warpAffine`` (fixed point, source positions in 1/32
  pixel, bicubic a = -0.75 where Pillow's affine bicubic is a = -1 in doubles): on photos a mean absolute
  difference of 0.6–0.86 grey levels, at most 16 (sharp edges);
- Posterize with 0 bits (``v0``'s ``('Posterize', 0.8, 2)``): the reference TF result, a black image, where
  Pillow ≥ 11 raises.

Speed is why OpenCV does the resampling and the look-ups: at 224 px on one thread a bicubic affine op costs 1.7 ms
in Pillow, 1.2 ms in torch's ``grid_sample``, 0.55 ms in ``warpAffine`` and 0.25–0.35 ms as lines; ``cv2.LUT`` is
the cheapest look-up (``numpy.take`` ~1.5×, torch's uint8 indexing ~10×). Ops take either memory layout of a
``[3, H, W]`` tensor: channel planes (what ``interpolate`` mostly leaves the fast transform's crop in), or height ×
width × channels (channels-last strides: what OpenCV's resampling works in and returns; ``cv2.merge`` /
``cv2.split`` convert, ~15× faster than a transposing copy). An op that raises
becomes an :class:`AugmentationError` naming it: a bug, never a corrupt sample.
"""

from __future__ import annotations

import copy
import functools
import math
import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np
import torch
from PIL import Image
from timm.data.auto_augment import AugmentOp, AutoAugment, RandAugment
from timm.data.auto_augment import posterize as TIMM_POSTERIZE

from pipeline.errors import PipelineError

_CV_MODES = {Image.Resampling.NEAREST: cv2.INTER_NEAREST, Image.Resampling.BILINEAR: cv2.INTER_LINEAR,
             Image.Resampling.BICUBIC: cv2.INTER_CUBIC}
_VALUES = np.arange(256)
cv2.setNumThreads(0)  # one sample per call inside loader workers (the parallelism): no thread pool per worker


class AugmentationError(PipelineError):
    """An augmentation op failed on a decoded image: a bug in the augmentation, not bad data (stops the run)."""


def _hwc(img: torch.Tensor) -> np.ndarray:
    """A uint8 ``[C, H, W]`` tensor's pixels as an ``[H, W, C]`` array (a view when its memory is channels-last;
    from channel planes ``cv2.merge``, ~15× faster than torch's or numpy's transposing copy)."""
    hwc = img.permute(1, 2, 0)
    if hwc.is_contiguous():
        return hwc.numpy()
    return cv2.merge(list(img.contiguous().numpy())).reshape(hwc.shape)


def channel_planes(img: torch.Tensor) -> torch.Tensor:
    """``img`` with contiguous ``[C, H, W]`` memory (a channels-last one split by ``cv2.split``, ~4× faster
    than the transposing copy ``torch.stack`` would make of it)."""
    if img.is_contiguous():
        return img
    return torch.from_numpy(np.stack(cv2.split(_hwc(img))))


def _tensor(hwc: np.ndarray) -> torch.Tensor:
    """An ``[H, W, C]`` array as a ``[C, H, W]`` tensor with channels-last strides (no copy)."""
    return torch.from_numpy(hwc.reshape(hwc.shape[0], hwc.shape[1], -1)).permute(2, 0, 1)


def _planes(img: torch.Tensor) -> np.ndarray | None:
    """``img``'s pixels as ``[C, H, W]`` planes when its memory is laid out so (no copy), else None."""
    return img.numpy() if img.is_contiguous() else None


def _point(img: torch.Tensor, lut: np.ndarray) -> torch.Tensor:
    """Pillow's ``point``: ``lut`` (``[256]`` or one row per channel, uint8) looked up for every pixel, in the
    image's own memory layout (channel planes or channels-last)."""
    planes = _planes(img)
    if planes is None:
        table = lut if lut.ndim == 1 else np.ascontiguousarray(lut.T).reshape(256, 1, lut.shape[0])
        return _tensor(cv2.LUT(_hwc(img), table))
    if lut.ndim == 1:
        return torch.from_numpy(cv2.LUT(planes.reshape(-1, planes.shape[2]), lut).reshape(planes.shape))
    return torch.from_numpy(np.stack([cv2.LUT(plane, table) for plane, table in zip(planes, lut, strict=True)]))


def _histograms(img: torch.Tensor) -> np.ndarray:
    """Each channel's 256-bin histogram, ``[C, 256]`` int64."""
    planes = _planes(img)
    images, channels = ([planes[c] for c in range(len(planes))], [0] * len(planes)) if planes is not None else (
        [_hwc(img)] * img.shape[0], list(range(img.shape[0])))
    return np.stack([cv2.calcHist([im], [c], None, [256], [0, 256]).reshape(256)
                     for im, c in zip(images, channels, strict=True)]).astype(np.int64)


def _blend_lut(base: float, factor: float) -> np.ndarray:
    """Pillow's ``Image.blend`` of a constant ``base`` image with every value: float32, clipped, truncated."""
    v = np.float32(base) + np.float32(factor) * (_VALUES.astype(np.float32) - np.float32(base))
    return np.clip(v, 0, 255).astype(np.uint8)


def _blend(degenerate: torch.Tensor, img: torch.Tensor, factor: float) -> torch.Tensor:
    """Pillow's ``Image.blend(degenerate, img, factor)`` on uint8 (float32 ``d + f·(i − d)``, clipped, truncated);
    ``degenerate`` a float tensor broadcasting to ``img``."""
    return _to_uint8(img.contiguous().float().sub_(degenerate).mul_(factor).add_(degenerate).clamp_(0, 255))


def _to_uint8(x: torch.Tensor) -> torch.Tensor:
    """Float in 0…255 → uint8, truncated (through int16: ~2× faster than a direct float → uint8 cast)."""
    return x.to(torch.int16).to(torch.uint8)


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


def _affine(img: torch.Tensor, matrix: tuple[float, ...], fillcolor: tuple[int, ...] | int = 0,
            resample: Any = Image.Resampling.BICUBIC) -> torch.Tensor:
    """Pillow's ``transform(size, AFFINE, matrix)``: output pixel centre (x, y) samples the input at
    ``(a x + b y + c, d x + e y + f)``; a sample outside the image takes ``fillcolor``, edge taps are clamped.

    ``resample`` a sequence: one drawn with ``random.choice``, as timm's ops do.
    """
    if isinstance(resample, (list, tuple)):
        resample = random.choice(resample)
    hwc = _hwc(img)
    h, w, channels = hwc.shape
    a, b, c, d, e, f = matrix
    # warpAffine maps output pixel indices to input ones: Pillow's pixel-centre map shifted by half a pixel
    to_source = np.array([[a, b, c + (a + b) / 2 - 0.5], [d, e, f + (d + e) / 2 - 0.5]])
    out = cv2.warpAffine(hwc, to_source, (w, h), flags=_CV_MODES[Image.Resampling(resample)] | cv2.WARP_INVERSE_MAP,
                         borderMode=cv2.BORDER_REPLICATE).reshape(h, w, channels)
    # Pillow's fill test (the source point of the pixel centre outside [0, w) × [0, h)) is a nearest-neighbour
    # warp's in-range test: round(x − ½) ∈ [0, w − 1] ⇔ x ∈ [0, w), here in OpenCV's 1/1024 px fixed point
    outside = cv2.warpAffine(_zeros(h, w), to_source, (w, h), flags=cv2.INTER_NEAREST | cv2.WARP_INVERSE_MAP,
                             borderMode=cv2.BORDER_CONSTANT, borderValue=255)
    fill = tuple(np.broadcast_to(np.asarray(fillcolor, np.uint8), (channels,)).tolist())
    cv2.copyTo(_constant(h, w, fill), outside, out)
    return _tensor(out)


@functools.lru_cache(maxsize=8)
def _zeros(h: int, w: int) -> np.ndarray:
    """A black ``[h, w]`` uint8 plane (cached: read-only use)."""
    return np.zeros((h, w), np.uint8)


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
    if isinstance(resample, (list, tuple)):
        resample = random.choice(resample)
    resample = Image.Resampling(resample)
    if resample not in (Image.Resampling.BICUBIC, Image.Resampling.BILINEAR):
        return _affine(img, (1, factor, offset, 0, 1, 0) if axis == 1 else (1, 0, 0, factor, 1, offset), fillcolor,
                       resample)
    hwc = _hwc(img)
    h, w, channels = hwc.shape
    size, lines = hwc.shape[axis], hwc.shape[1 - axis]
    shift = factor * (np.arange(lines) + 0.5) + offset  # Pillow's source x of pixel centre p + ½ is p + ½ + shift
    whole = np.floor(shift)
    # window j of line i is source pixel j + whole_i - 1, from an edge-padded copy (Pillow clamps its taps)
    # padded far enough that every window fits; pixels past the edge only ever feed pixels that get the fill
    pad = int(np.abs(whole).max()) + 3
    padded = cv2.copyMakeBorder(hwc, *((pad, pad, 0, 0) if axis == 0 else (0, 0, pad, pad)), cv2.BORDER_REPLICATE)
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

    if resample == Image.Resampling.BILINEAR:  # with Pillow's d of each pixel: its rounding varies along a line
        source = (np.arange(size) + 0.5) + shift[:, None] - 0.5
        frac = torch.from_numpy(source - np.floor(source))
        a = taps[1].double()
        out = taps[2].double().sub_(a).mul_((frac if axis == 1 else frac.T)[:, :, None]).add_(a)
    else:
        weights = _bicubic_taps(shift - whole)
        out = taps[0].float().mul_(per_line(weights[0]))
        for t in range(1, 4):
            out.addcmul_(taps[t].float(), per_line(weights[t]))
        out.add_(1e-3)
    result = _to_uint8(out.clamp_(0, 255)).numpy()
    position = np.arange(size)  # inside: 0 ≤ p + ½ + shift < size
    lo, hi = np.ceil(-shift - 0.5).astype(np.int64), np.ceil(size - shift - 0.5).astype(np.int64)
    outside = (position < lo[:, None]) | (position >= hi[:, None])
    fill = tuple(np.broadcast_to(np.asarray(fillcolor, np.uint8), (channels,)).tolist())
    cv2.copyTo(_constant(h, w, fill), np.ascontiguousarray(outside if axis == 1 else outside.T).view(np.uint8), result)
    return _tensor(result)


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
