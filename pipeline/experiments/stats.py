"""The few statistics the sweeps need: binomial errors of an accuracy, log-log growth exponents, Pearson r.

numpy does the arithmetic; these wrappers only fix the conventions (95 % intervals, which logs) in one place.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

Z95 = 1.959964  # two-sided 95 % quantile of the normal distribution


def binomial_se(p: float, n: int) -> float:
    """Standard error of an accuracy ``p`` measured on ``n`` images: √(p(1−p)/n)."""
    return math.sqrt(max(p * (1 - p), 0.0) / n) if n > 0 else math.nan


def growth_exponent(xs: Sequence[float], ys: Sequence[float]) -> float | None:
    """The least-squares slope of log y over log x (y ∝ x^k); None with fewer than two distinct x."""
    if len(set(xs)) < 2:
        return None
    slope, _ = np.polyfit(np.log(np.asarray(xs, float)), np.log(np.asarray(ys, float)), 1)
    return float(slope)


def pearson_r(xs: Sequence[float], ys: Sequence[float]) -> float | None:
    """Pearson's correlation coefficient of ``xs`` and ``ys``; None with fewer than three points or no spread."""
    if len(xs) < 3 or len(set(xs)) < 2 or len(set(ys)) < 2:
        return None
    return float(np.corrcoef(np.asarray(xs, float), np.asarray(ys, float))[0, 1])


def theory_exponents(e_d: float, e_w: float, e_r: float) -> tuple[float, float]:
    """Growth exponents of (params, acts) over flops for d ∝ x^e_d, w ∝ x^e_w, r ∝ x^e_r (Dollár et al.).

    flops ∝ d·w²·r², params ∝ d·w², acts ∝ d·w·r²; normalised so that flops grow as x^1.
    """
    flops = e_d + 2 * e_w + 2 * e_r
    return (e_d + 2 * e_w) / flops, (e_d + e_w + 2 * e_r) / flops
