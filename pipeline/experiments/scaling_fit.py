"""Scaling-law fits: per strategy, top-1 error over compute as a power law, with bootstrap intervals, the points
where two strategies' curves cross, whether the data separate them, and an extrapolation to the next point.

The form is error = a·C^(−b) + c (c ≥ 0: the error no compute removes) when a strategy has at least
POWER_LAW_POINTS distinct compute values, else the log-log line error = a·C^(−b) (c = 0). Intervals come from a
bootstrap over runs: the strategy's runs (every seed of every point) are drawn with replacement and the same form
refitted; with ``eval_images`` each drawn run's accuracy is also redrawn from its binomial (the evaluation's own
noise). Replicates that lack enough distinct compute values for the form are left out (``StrategyFit.replicates``
says how many were kept). Everything is 95 %.
"""

from __future__ import annotations

import io
import math
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from scipy import optimize

from pipeline.atomic import atomic_write
from pipeline.errors import PipelineError

POWER_LAW_POINTS = 4  # three parameters: at least one more distinct compute value than that
MAX_EXPONENT = 10.0
REPLICATES = 1000
GRID_POINTS = 60
COST_LABELS = {"flops": "flops (multiply-adds)", "acts": "activations", "params": "params",
               "epoch_time_s": "epoch time (s)"}


@dataclass(frozen=True)
class Law:
    """error = a·(C / x_ref)^(−b) + c; ``form`` is ``power`` (c fitted, ≥ 0) or ``loglinear`` (c = 0)."""

    form: str
    a_ref: float
    b: float
    c: float
    x_ref: float

    @property
    def a(self) -> float:
        """The coefficient in the units of C: error = a·C^(−b) + c."""
        return self.a_ref * self.x_ref**self.b

    def predict(self, x: np.ndarray | float) -> np.ndarray:
        """The fitted error at compute ``x``."""
        return self.a_ref * (np.asarray(x, float) / self.x_ref) ** (-self.b) + self.c


@dataclass(frozen=True)
class Interval:
    """A point estimate with its 95 % bootstrap interval (percentiles 2.5 and 97.5)."""

    value: float
    low: float
    high: float


@dataclass(frozen=True, eq=False)  # draws is an array
class StrategyFit:
    """One strategy's fit over one cost: the law, its parameters' intervals, a band of the fitted error over
    ``grid`` (the data's range and on to the extrapolated compute) and the extrapolation itself."""

    strategy: str
    cost: str
    law: Law
    runs: int
    points: int
    replicates: int
    b: Interval
    c: Interval
    grid: tuple[float, ...]
    band_low: tuple[float, ...]
    band_high: tuple[float, ...]
    max_x: float
    next_x: float | None
    extrapolation: Interval | None
    draws: np.ndarray  # replicates × len(grid): each kept replicate's fitted error over grid


@dataclass(frozen=True)
class Comparison:
    """Two strategies over one cost on their common range of compute: where the fitted curves cross, and where
    the bootstrap interval of the difference (error of ``first`` − error of ``second``) excludes 0."""

    first: str
    second: str
    cost: str
    crossings: tuple[float, ...]
    grid: tuple[float, ...]
    difference: tuple[Interval, ...]

    def separated(self) -> list[tuple[float, float, str]]:
        """Maximal ranges ``(from, to, verdict)`` of the grid where the verdict is the same: ``first lower``,
        ``second lower`` or ``not separated``."""
        ranges: list[tuple[float, float, str]] = []
        for x, d in zip(self.grid, self.difference, strict=True):
            verdict = (f"{self.first} lower" if d.high < 0 else f"{self.second} lower" if d.low > 0
                       else "not separated")
            if ranges and ranges[-1][2] == verdict:
                ranges[-1] = (ranges[-1][0], x, verdict)
            else:
                ranges.append((x, x, verdict))
        return ranges


def fit_law(xs: Sequence[float], errors: Sequence[float], form: str | None = None) -> Law:
    """Least-squares fit of error over compute: ``power`` (scipy's curve_fit, a ≥ 0, 0 ≤ b ≤ MAX_EXPONENT,
    0 ≤ c ≤ the smallest error) or ``loglinear`` (a line on log-log axes); None picks by the distinct compute
    values (POWER_LAW_POINTS). PipelineError with fewer than two distinct values, or too few for ``power``."""
    x = np.asarray(xs, float)
    y = np.asarray(errors, float)
    distinct = len(set(x.tolist()))
    form = form or ("power" if distinct >= POWER_LAW_POINTS else "loglinear")
    needed = POWER_LAW_POINTS if form == "power" else 2
    if distinct < needed:
        raise PipelineError(f"a {form} fit needs {needed} distinct compute values, got {distinct}")
    x_ref = float(x.min())
    u = x / x_ref
    floor = max(float(y[y > 0].min()) / 2 if (y > 0).any() else 1e-6, 1e-12)  # log of a zero error
    slope, intercept = np.polyfit(np.log(u), np.log(np.maximum(y, floor)), 1)
    if form == "loglinear":
        return Law("loglinear", float(math.exp(intercept)), float(-slope), 0.0, x_ref)
    c_max = max(float(y.min()), 1e-12)
    c0 = 0.5 * float(y.min())
    slope0, intercept0 = np.polyfit(np.log(u), np.log(np.maximum(y - c0, floor)), 1)
    p0 = (math.exp(intercept0), float(np.clip(-slope0, 1e-3, MAX_EXPONENT - 1e-3)), min(c0, c_max / 2))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optimize.OptimizeWarning)
        (a_ref, b, c), _ = optimize.curve_fit(
            lambda v, a, b, c: a * v ** (-b) + c, u, y, p0=p0,
            bounds=([0.0, 0.0, 0.0], [np.inf, MAX_EXPONENT, c_max]), method="trf", maxfev=20000,
            ftol=1e-12, xtol=1e-12, gtol=1e-12,
        )
    return Law("power", float(a_ref), float(b), float(c), x_ref)


def _interval(value: float, draws: np.ndarray) -> Interval:
    low, high = np.percentile(draws, [2.5, 97.5]) if len(draws) else (math.nan, math.nan)
    return Interval(value, float(low), float(high))


def fit_strategy(
    strategy: str, cost: str, runs: Sequence[tuple[float, float]], *, eval_images: int | None = None,
    next_x: float | None = None, replicates: int = REPLICATES, seed: int = 0,
) -> StrategyFit:
    """Fit one strategy's ``runs`` (``(compute, error)``, one per run: seeds are separate runs) and bootstrap it.

    ``next_x``: the compute to extrapolate to (None: one more step of the largest ratio between the two largest
    compute values, i.e. the next φ of a doubling sweep). The band covers the data's range and ``next_x``.
    """
    xs = np.array([x for x, _ in runs], float)
    ys = np.array([e for _, e in runs], float)
    law = fit_law(xs, ys)
    distinct = sorted(set(xs.tolist()))
    if next_x is None and len(distinct) >= 2:
        next_x = distinct[-1] ** 2 / distinct[-2]
    grid = np.geomspace(distinct[0], max(next_x or distinct[-1], distinct[-1]), GRID_POINTS)
    rng = np.random.default_rng(seed)
    needed = POWER_LAW_POINTS if law.form == "power" else 2
    kept: list[Law] = []
    for _ in range(replicates):
        pick = rng.integers(0, len(xs), len(xs))
        x, y = xs[pick], ys[pick]
        if eval_images:
            y = 1 - rng.binomial(eval_images, 1 - y) / eval_images
        if len(set(x.tolist())) < needed:
            continue
        try:
            kept.append(fit_law(x, y, law.form))
        except RuntimeError:  # curve_fit found no optimum within maxfev
            continue
    draws = np.array([k.predict(grid) for k in kept]).reshape(len(kept), len(grid))
    low, high = (np.percentile(draws, [2.5, 97.5], axis=0) if kept
                 else (np.full(len(grid), math.nan), np.full(len(grid), math.nan)))
    extrapolation = None
    if next_x is not None:
        extrapolation = _interval(float(law.predict(next_x)), np.array([k.predict(next_x) for k in kept]))
    return StrategyFit(
        strategy, cost, law, len(xs), len(distinct), len(kept),
        _interval(law.b, np.array([k.b for k in kept])), _interval(law.c, np.array([k.c for k in kept])),
        tuple(grid.tolist()), tuple(low.tolist()), tuple(high.tolist()), distinct[-1], next_x, extrapolation, draws,
    )


def fit_records(
    records: Sequence[dict[str, Any]], cost: str = "flops", metric: str = "top1",
    group: Callable[[dict[str, Any]], str] = lambda r: str(r["strategy"]), *, eval_images: int | None = None,
    replicates: int = REPLICATES, seed: int = 0,
) -> list[StrategyFit]:
    """:func:`fit_strategy` for every group (default: strategy) of ``records`` with ``metric`` and ``cost``;
    error = 1 − ``metric``. Groups with fewer than two distinct compute values are left out."""
    groups: dict[str, list[tuple[float, float]]] = {}
    for r in records:
        if r.get(metric) is not None and r.get(cost):
            groups.setdefault(group(r), []).append((float(r[cost]), 1 - float(r[metric])))
    return [fit_strategy(name, cost, runs, eval_images=eval_images, replicates=replicates, seed=seed)
            for name, runs in groups.items() if len({x for x, _ in runs}) >= 2]


def compare(first: StrategyFit, second: StrategyFit) -> Comparison | None:
    """Crossings of two fits of one cost and the bootstrap interval of their difference over the compute both
    cover (data and extrapolation); None if the ranges do not overlap. Replicates are paired by index (the two
    strategies' runs are independent, so any pairing is a draw of the difference)."""
    if first.cost != second.cost:
        raise PipelineError(f"compare fits of one cost (got {first.cost} and {second.cost})")
    low, high = max(first.grid[0], second.grid[0]), min(first.grid[-1], second.grid[-1])
    if low >= high:
        return None
    grid = np.geomspace(low, high, GRID_POINTS)
    gap = first.law.predict(grid) - second.law.predict(grid)
    crossings = []
    for i in np.flatnonzero(np.sign(gap[:-1]) * np.sign(gap[1:]) < 0):
        crossings.append(float(optimize.brentq(lambda v: float(first.law.predict(v) - second.law.predict(v)),
                                               grid[i], grid[i + 1])))
    pairs = min(first.replicates, second.replicates)
    draws = (_regrid(first, grid)[:pairs] - _regrid(second, grid)[:pairs]) if pairs else np.empty((0, len(grid)))
    difference = tuple(_interval(float(g), draws[:, j]) for j, g in enumerate(gap))
    return Comparison(first.strategy, second.strategy, first.cost, tuple(crossings), tuple(grid.tolist()), difference)


def _regrid(fit: StrategyFit, grid: np.ndarray) -> np.ndarray:
    """A fit's replicate curves interpolated (log x) onto ``grid``."""
    log_grid = np.log(np.asarray(fit.grid))
    return np.array([np.interp(np.log(grid), log_grid, row) for row in fit.draws]).reshape(len(fit.draws), len(grid))


def _pct(interval: Interval) -> str:
    return f"{100 * interval.value:.1f} [{100 * interval.low:.1f}, {100 * interval.high:.1f}]"


FIT_HEADERS = ("strategy", "cost C", "error", "runs (points)", "a", "b [95 %]", "c (%) [95 %]", "bootstrap fits",
               "next point: error (%) [95 %]")


def fit_rows(fits: Sequence[StrategyFit]) -> list[list[str]]:
    """The fits' parameter table cells (error in %; the next point marked as extrapolated), under FIT_HEADERS."""
    return [[f.strategy, COST_LABELS.get(f.cost, f.cost), "a·C^(−b) + c" if f.law.form == "power" else "a·C^(−b)",
             f"{f.runs} ({f.points})", f"{f.law.a:.3g}", f"{f.b.value:.3f} [{f.b.low:.3f}, {f.b.high:.3f}]",
             _pct(f.c) if f.law.form == "power" else "0 (not fitted)", str(f.replicates),
             f"{f.next_x:.3g}: {_pct(f.extrapolation)} (extrapolated)" if f.extrapolation else "-"] for f in fits]


def comparison_lines(comparisons: Sequence[Comparison]) -> list[str]:
    """One markdown line per comparison: where the fitted curves cross and over which compute the bootstrap
    interval of the difference separates the strategies."""
    lines = []
    for c in comparisons:
        crossing = (f"the fitted curves cross at {', '.join(f'{x:.3g}' for x in c.crossings)}" if c.crossings
                    else "the fitted curves do not cross")
        ranges = "; ".join(f"{lo:.3g}–{hi:.3g}: {verdict}" for lo, hi, verdict in c.separated())
        lines.append(f"- {c.first} vs {c.second} over {COST_LABELS.get(c.cost, c.cost)}: {crossing} between "
                     f"{c.grid[0]:.3g} and {c.grid[-1]:.3g}; 95 % bootstrap interval of the difference: {ranges}.")
    return lines


def plot_fits(fits: Sequence[StrategyFit], records: Sequence[dict[str, Any]], path: str | Path,
              metric: str = "top1", group: Callable[[dict[str, Any]], str] = lambda r: str(r["strategy"])) -> Path:
    """A PNG with one panel per cost: each strategy's runs (error %, log x), its fitted curve with the 95 %
    bootstrap band, dashed beyond the largest compute measured, and the extrapolated point with its interval."""
    import matplotlib

    matplotlib.use("Agg")  # files only: cluster nodes have no display
    import matplotlib.pyplot as plt

    if not fits:
        raise PipelineError("no fit to plot")
    costs = list(dict.fromkeys(f.cost for f in fits))
    fig, axes = plt.subplots(1, len(costs), figsize=(5 * len(costs), 4), sharey=True, constrained_layout=True,
                             squeeze=False)
    for ax, cost in zip(axes[0], costs, strict=True):
        for i, fit in enumerate(f for f in fits if f.cost == cost):
            color = f"C{i}"
            points = [r for r in records if group(r) == fit.strategy and r.get(metric) is not None and r.get(cost)]
            ax.plot([r[cost] for r in points], [100 * (1 - r[metric]) for r in points], "o", color=color,
                    label=fit.strategy)
            grid = np.asarray(fit.grid)
            measured = grid <= fit.max_x * (1 + 1e-9)
            curve = 100 * fit.law.predict(grid)
            ax.plot(grid[measured], curve[measured], "-", color=color)
            ax.plot(grid[~measured], curve[~measured], "--", color=color)
            ax.fill_between(grid, 100 * np.asarray(fit.band_low), 100 * np.asarray(fit.band_high), color=color,
                            alpha=0.2, linewidth=0)
            if fit.extrapolation is not None:
                e = fit.extrapolation
                ax.errorbar([fit.next_x], [100 * e.value], yerr=[[100 * (e.value - e.low)], [100 * (e.high - e.value)]],
                            fmt="s", mfc="none", color=color, capsize=3)
                ax.annotate("extrapolated", (fit.next_x, 100 * e.value), fontsize=7, xytext=(4, 4),
                            textcoords="offset points")
        ax.set_xscale("log")
        ax.set_xlabel(COST_LABELS.get(cost, cost))
        ax.grid(True, which="both", alpha=0.3)
    axes[0][0].set_ylabel("top-1 error (%)")
    axes[0][0].legend(title="strategy", fontsize=8)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110)
    plt.close(fig)
    return atomic_write(path, lambda f: f.write(buffer.getvalue()))
