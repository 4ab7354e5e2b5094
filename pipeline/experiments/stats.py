"""The statistics of a study: intervals of an accuracy, spread over seeds, the "within noise of the best" test,
Pearson r of epoch time with cost within groups of comparable runs, and growth exponents with standard errors.

scipy does the statistics (``binomtest(...).proportion_ci``, ``pearsonr(...).confidence_interval``,
``linregress``); these wrappers only fix the conventions (95 %, which logs, which runs are comparable) in one place.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import stats

from pipeline.errors import PipelineError

Z95 = 1.959964  # two-sided 95 % quantile of the normal distribution
CONFIDENCE = 0.95
INTERVAL_METHODS = ("wilson", "exact")  # exact = Clopper–Pearson
# runs whose epoch times may be compared: same kind of sweep, dataset, accelerator type and number of devices
COMPARABLE_KEYS = ("sweep_kind", "dataset", "accelerator", "world_size")
SEED_SUFFIX = re.compile(r"-seed\d+$")


def _binomial_se(p: float, n: int) -> float:
    """Standard error of an accuracy ``p`` measured on ``n`` images, √(p(1−p)/n): the evaluation's share of a
    point's standard error (intervals of one accuracy are :func:`accuracy_interval`'s)."""
    return math.sqrt(max(p * (1 - p), 0.0) / n) if n > 0 else math.nan


def accuracy_interval(accuracy: float, n: int, method: str = "wilson") -> tuple[float, float]:
    """The 95 % interval (fractions) of an accuracy measured on ``n`` images: Wilson's score interval or, with
    ``method="exact"``, Clopper–Pearson's. The count of correct images is ``round(accuracy · n)``."""
    if method not in INTERVAL_METHODS:
        raise PipelineError(f"interval method must be one of {', '.join(INTERVAL_METHODS)} (got {method!r})")
    if n < 1 or not 0 <= accuracy <= 1:
        raise PipelineError(f"an accuracy interval needs n ≥ 1 images and 0 ≤ accuracy ≤ 1 (got {accuracy}, {n})")
    ci = stats.binomtest(round(accuracy * n), n).proportion_ci(confidence_level=CONFIDENCE, method=method)
    return float(ci.low), float(ci.high)


def point_name(run_name: str) -> str:
    """The point a run belongs to: its name without the ``-seed<k>`` suffix (runs of one point differ only in
    their seed)."""
    return SEED_SUFFIX.sub("", run_name)


@dataclass(frozen=True)
class PointSummary:
    """One point of a sweep over its seeds: mean accuracy, the s.d. over seeds (None for one seed), and the
    standard error of the mean used to compare points (see :func:`point_summary`)."""

    point: str
    seeds: int
    mean: float
    sd: float | None
    se: float


def point_summary(point: str, accuracies: Sequence[float], n: int) -> PointSummary:
    """Mean ± s.d. (ddof 1) of one point's accuracies over seeds, each measured on the same ``n`` images.

    The standard error of the mean combines both sources of noise: the evaluation images' binomial
    p(1−p)/n (the same images for every seed, so it does not shrink with seeds) and the seed-to-seed
    variance s²/m of the mean of m trainings. With one seed it is the binomial error alone.
    """
    if not accuracies:
        raise PipelineError(f"point {point} has no finished run")
    m = len(accuracies)
    mean = float(np.mean(accuracies))
    sd = float(np.std(accuracies, ddof=1)) if m > 1 else None
    se = math.sqrt(_binomial_se(mean, n) ** 2 + (sd**2 / m if sd is not None else 0.0))
    return PointSummary(point, m, mean, sd, se)


def first_runs(records: Iterable[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Each point's first run in ``records`` (by :func:`point_name`): what its seeds share (spec, costs, labels)."""
    firsts: dict[str, dict[str, Any]] = {}
    for r in records:
        firsts.setdefault(point_name(str(r["run_name"])), r)
    return firsts


def summarise_points(records: Iterable[dict[str, Any]], n: int, metric: str = "top1") -> list[PointSummary]:
    """:func:`point_summary` of every point (run names without ``-seed<k>``) of ``records`` that have ``metric``,
    in first-seen order."""
    points: dict[str, list[float]] = {}
    for r in records:
        if r.get(metric) is not None:
            points.setdefault(point_name(str(r["run_name"])), []).append(float(r[metric]))
    return [point_summary(name, values, n) for name, values in points.items()]


def within_noise(best: PointSummary, other: PointSummary) -> bool:
    """Whether ``other`` is within the noise of ``best``: their gap is at most 1.96·√(se₁² + se₂²) (a two-sided
    95 % test on the difference, each se from the binomial error and the spread over seeds)."""
    return best.mean - other.mean <= Z95 * math.sqrt(best.se**2 + other.se**2)


@dataclass(frozen=True)
class Correlation:
    """Pearson r of two variables with its 95 % interval (Fisher's z; (−1, 1) with three points) over n points."""

    r: float
    low: float
    high: float
    n: int


def correlation(xs: Sequence[float], ys: Sequence[float]) -> Correlation | None:
    """Pearson's r of ``xs`` and ``ys`` with its interval; None with fewer than three points or no spread."""
    if len(xs) < 3 or len(set(xs)) < 2 or len(set(ys)) < 2:
        return None
    result = stats.pearsonr(np.asarray(xs, float), np.asarray(ys, float))
    ci = result.confidence_interval(confidence_level=CONFIDENCE)
    return Correlation(float(result.statistic), float(ci.low), float(ci.high), len(xs))


def comparable_groups(records: Iterable[dict[str, Any]]) -> dict[tuple[Any, ...], list[dict[str, Any]]]:
    """Records grouped by COMPARABLE_KEYS (a missing key counts as None), in first-seen order."""
    groups: dict[tuple[Any, ...], list[dict[str, Any]]] = {}
    for r in records:
        groups.setdefault(tuple(r.get(k) for k in COMPARABLE_KEYS), []).append(r)
    return groups


def runtime_correlations(records: Iterable[dict[str, Any]], cost: str) -> dict[tuple[Any, ...], Correlation | None]:
    """Per group of comparable runs (:func:`comparable_groups`), Pearson r of log ``cost`` (``flops``, ``acts``,
    ``params``) with log epoch time, over the runs that have both; None where a group has too few."""
    result = {}
    for key, group in comparable_groups(records).items():
        timed = [r for r in group if r.get("epoch_time_s") and r.get(cost)]
        result[key] = correlation([math.log(r[cost]) for r in timed], [math.log(r["epoch_time_s"]) for r in timed])
    return result


@dataclass(frozen=True)
class Exponent:
    """A growth exponent k of y ∝ x^k: the least-squares slope of log y on log x, its standard error and 95 %
    interval (Student's t with n − 2 degrees of freedom; both None with two points, where a line fits exactly)."""

    k: float
    se: float | None
    low: float | None
    high: float | None
    n: int


def growth_fit(xs: Sequence[float], ys: Sequence[float]) -> Exponent | None:
    """The exponent of ``ys`` over ``xs`` on log-log axes (``scipy.stats.linregress``); None with fewer than two
    distinct x."""
    if len(set(xs)) < 2:
        return None
    fit = stats.linregress(np.log(np.asarray(xs, float)), np.log(np.asarray(ys, float)))
    n = len(xs)
    if n < 3:
        return Exponent(float(fit.slope), None, None, None, n)
    half = float(stats.t.ppf(0.5 + CONFIDENCE / 2, n - 2)) * float(fit.stderr)
    return Exponent(float(fit.slope), float(fit.stderr), float(fit.slope) - half, float(fit.slope) + half, n)


def theory_exponents(e_d: float, e_w: float, e_r: float) -> tuple[float, float]:
    """Growth exponents of (params, acts) over flops for d ∝ x^e_d, w ∝ x^e_w, r ∝ x^e_r (Dollár et al.).

    flops ∝ d·w²·r², params ∝ d·w², acts ∝ d·w·r²; normalised so that flops grow as x^1.
    """
    flops = e_d + 2 * e_w + 2 * e_r
    return (e_d + 2 * e_w) / flops, (e_d + e_w + 2 * e_r) / flops
