"""Rounding rules that turn real-valued multipliers into buildable networks.

- Channels: TF EfficientNet's ``round_filters``: the nearest multiple of 8 (at least 8), bumped up
  by 8 when rounding lost more than 10% of ``c * w``. timm's EfficientNet builder applies the same
  rule internally (``round_channels``); ``tests/models`` checks the two agree on built networks.
- Repeats: TF's ``round_repeats``: ``ceil(n * d)`` so that any d > 1 adds a block to every stage.
- Resolution: a multiple of **4**. Every official EfficientNet resolution is a multiple of 4 but
  not all are multiples of 8 (260, 300, 380), pycls rounds image size to 4 as well, and the finer
  step keeps r closest to γ^φ. Python's round (half to even), as pycls.
"""

from __future__ import annotations

import math

CHANNEL_DIVISOR = 8
RESOLUTION_MULTIPLE = 4


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


def round_resolution(pixels: float, multiple: int = RESOLUTION_MULTIPLE) -> int:
    """Round an input side length to the nearest multiple of ``multiple`` (at least one multiple)."""
    return max(multiple, round(pixels / multiple) * multiple)
