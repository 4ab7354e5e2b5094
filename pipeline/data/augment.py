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
  outside the image takes the fill; edge taps are clamped) and filters, one line at a time: bilinear and
  whole-pixel shifts exact, bicubic ≤ 1 grey level at < 0.3 % of pixels (float32 taps);
- Rotate: the same map and fill rule, resampled by OpenCV's ``warpAffine`` (fixed point, source positions in 1/32
  pixel, bicubic a = -0.75 where Pillow's affine bicubic is a = -1 in doubles): on photos a mean absolute
  difference of 0.6–0.86 grey levels, at most 16 (sharp edges);
- Posterize with 0 bits (``v0``'s ``('Posterize', 0.8, 2)``): the reference TF result, a black image, where
  Pillow ≥ 11 raises.

The ops live in :mod:`~pipeline.data.augment_colour` and :mod:`~pipeline.data.augment_geometry`; OpenCV does
their resampling and look-ups for speed (at 224 px on one thread a bicubic affine op costs 1.7 ms in Pillow,
1.2 ms in torch's ``grid_sample``, 0.55 ms in ``warpAffine`` and 0.25–0.35 ms as lines); they take either memory
layout of a ``[3, H, W]`` tensor (:mod:`~pipeline.data.image_layout`). An op that raises becomes an
:class:`AugmentationError` naming it: a bug, never a corrupt sample.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from PIL import Image
from timm.data.auto_augment import AugmentOp, AutoAugment, RandAugment
from timm.data.auto_augment import posterize as TIMM_POSTERIZE

from pipeline.data.augment_colour import (
    auto_contrast,
    brightness,
    color,
    contrast,
    equalize,
    invert,
    posterize,
    sharpness,
    solarize,
    solarize_add,
)
from pipeline.data.augment_geometry import (
    rotate,
    shear_x,
    shear_y,
    translate_x_abs,
    translate_x_rel,
    translate_y_abs,
    translate_y_rel,
)
from pipeline.errors import PipelineError


class AugmentationError(PipelineError):
    """An augmentation op failed on a decoded image: a bug in the augmentation, not bad data (stops the run)."""


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
