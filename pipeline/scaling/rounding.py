"""Rounding rules that turn real-valued multipliers into buildable networks, by name: ``tf`` or ``pycls``.

``tf`` — the EfficientNet paper's code (tensorflow/tpu ``efficientnet_model.py``):

- channels: ``round_filters``: the nearest multiple of 8 (at least 8), bumped up by 8 when rounding lost
  more than 10% of ``c * w``. timm's EfficientNet builder applies the same rule internally
  (``round_channels``); ``tests/models`` checks the two agree on built networks. Stem and head alike.
- repeats: ``round_repeats``: ``ceil(n * d)`` so that any d > 1 adds a block to every stage.

``pycls`` — Dollár, Singh & Girshick's scaler (facebookresearch/pycls ``pycls/models/scaler.py``,
``scale_model``, the ``effnet`` branch):

- channels: ``max(1, round(c * w / 8)) * 8``: the nearest multiple of 8, no 10% rule; the stem
  (``STEM_W``) and head (``HEAD_W``) are scaled by the same rule as the stages.
- repeats: ``max(1, round(n * d))``: the nearest count (Python's round, half to even), at least one.

Resolution, both rules: a multiple of **4** (pycls ``scale_model``: ``round(IM_SIZE * r / 4) * 4``).
Every official EfficientNet resolution is a multiple of 4 but not all are multiples of 8 (260, 300, 380),
and the finer step keeps r closest to γ^φ. Python's round (half to even), as pycls.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from pipeline.errors import PipelineError

CHANNEL_DIVISOR = 8
RESOLUTION_MULTIPLE = 4
ROUNDINGS = ("tf", "pycls")


def round_filters(channels: int, width: float, divisor: int = CHANNEL_DIVISOR) -> int:
    """Scale ``channels`` by ``width`` and round to a multiple of ``divisor`` with TF's 10% rule."""
    scaled = channels * width
    rounded = max(divisor, int(scaled + divisor / 2) // divisor * divisor)
    if rounded < 0.9 * scaled:
        rounded += divisor
    return int(rounded)


def round_repeats(repeats: int, depth: float) -> int:
    """Scale a stage's block count by ``depth``, rounding up (TF ``round_repeats``)."""
    return math.ceil(repeats * depth)


def pycls_filters(channels: int, width: float, divisor: int = CHANNEL_DIVISOR) -> int:
    """Scale ``channels`` by ``width`` to the nearest multiple of ``divisor`` (pycls ``scale_model``)."""
    return max(1, round(channels * width / divisor)) * divisor


def pycls_repeats(repeats: int, depth: float) -> int:
    """Scale a stage's block count by ``depth`` to the nearest count, at least 1 (pycls ``scale_model``)."""
    return max(1, round(repeats * depth))


def round_resolution(pixels: float, multiple: int = RESOLUTION_MULTIPLE) -> int:
    """Round an input side length to the nearest multiple of ``multiple`` (at least one multiple)."""
    return max(multiple, round(pixels / multiple) * multiple)


def check_rounding(rounding: str) -> None:
    """Refuse a rounding rule that is not one of ROUNDINGS."""
    if rounding not in ROUNDINGS:
        raise PipelineError(f"unknown rounding {rounding!r}; choose one of {', '.join(ROUNDINGS)}")


def scale_filters(channels: int, width: float, rounding: str) -> int:
    """``channels`` scaled by ``width`` under the named rounding rule."""
    check_rounding(rounding)
    return round_filters(channels, width) if rounding == "tf" else pycls_filters(channels, width)


def scale_repeats(repeats: int, depth: float, rounding: str) -> int:
    """A stage's block count scaled by ``depth`` under the named rounding rule."""
    check_rounding(rounding)
    return round_repeats(repeats, depth) if rounding == "tf" else pycls_repeats(repeats, depth)


@dataclass(frozen=True)
class Stages:
    """A network's shape: blocks and output channels per stage, stem and head channels.

    ``head`` is None for nets without a head convolution (ResNet); ``fixed_stem`` keeps the stem's
    width under scaling (ResNet-50 in timm: its plain 7×7 stem ignores ``stem_width``).
    """

    depths: tuple[int, ...]
    widths: tuple[int, ...]
    stem: int
    head: int | None
    fixed_stem: bool = False

    def scaled(self, depth: float, width: float, rounding: str) -> Stages:
        """The shape with every depth and width scaled by ``depth`` and ``width`` under ``rounding``."""
        return Stages(
            depths=tuple(scale_repeats(n, depth, rounding) for n in self.depths),
            widths=tuple(scale_filters(c, width, rounding) for c in self.widths),
            stem=self.stem if self.fixed_stem else scale_filters(self.stem, width, rounding),
            head=None if self.head is None else scale_filters(self.head, width, rounding),
            fixed_stem=self.fixed_stem,
        )
