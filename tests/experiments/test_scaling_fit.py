"""Scaling-law fits: exact recovery, bootstrap coverage, crossings, separation, extrapolation, text and plot."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from pipeline.errors import PipelineError
from pipeline.experiments.report import fit_section
from pipeline.experiments.scaling_fit import (
    FIT_HEADERS,
    compare,
    comparison_lines,
    fit_law,
    fit_records,
    fit_rows,
    fit_strategy,
    plot_fits,
)

FLOPS = [1e6 * 2**k for k in range(6)]  # six doublings, as φ = 0..5


def law(a: float, b: float, c: float) -> list[float]:
    return [a * x ** (-b) + c for x in FLOPS]


def test_power_law_recovers_exact_parameters() -> None:
    fit = fit_law(FLOPS, law(50.0, 0.3, 0.05))
    assert fit.form == "power"
    assert (fit.a, fit.b, fit.c) == (pytest.approx(50.0, rel=1e-6), pytest.approx(0.3, rel=1e-6),
                                     pytest.approx(0.05, rel=1e-6))


def test_few_points_get_a_log_log_line() -> None:
    fit = fit_law(FLOPS[:3], law(50.0, 0.3, 0.0)[:3])
    assert (fit.form, fit.a, fit.b, fit.c) == ("loglinear", pytest.approx(50.0), pytest.approx(0.3), 0.0)
    with pytest.raises(PipelineError, match="needs 4 distinct compute values, got 3"):
        fit_law(FLOPS[:3], law(50.0, 0.3, 0.0)[:3], "power")
    with pytest.raises(PipelineError, match="needs 2 distinct"):
        fit_law([1e6, 1e6], [0.5, 0.4])


def test_bootstrap_intervals_cover_the_true_law_on_noisy_runs() -> None:
    rng = np.random.default_rng(1)
    truth = law(50.0, 0.3, 0.05)
    runs = [(x, e + rng.normal(0, 0.005)) for x, e in zip(FLOPS, truth, strict=True) for _ in range(3)]  # 3 seeds
    fit = fit_strategy("dWr", "flops", runs, replicates=400, seed=0)
    assert (fit.runs, fit.points, fit.law.form) == (18, 6, "power")
    assert fit.replicates > 350  # draws without 4 distinct compute values are left out
    assert fit.b.low < 0.3 < fit.b.high and fit.b.high - fit.b.low < 0.1
    assert fit.c.low < 0.05 < fit.c.high
    # the next doubling, extrapolated, with the true error inside its interval
    assert fit.next_x == pytest.approx(FLOPS[-1] * 2)
    assert fit.extrapolation is not None
    assert fit.extrapolation.low < 50.0 * fit.next_x**-0.3 + 0.05 < fit.extrapolation.high
    assert all(lo <= hi for lo, hi in zip(fit.band_low, fit.band_high, strict=True))
    # seeded: the same runs give the same intervals
    assert fit_strategy("dWr", "flops", runs, replicates=400, seed=0).b == fit.b


def test_crossing_of_two_exact_laws_and_the_sides_it_separates() -> None:
    # 0.5·u^−0.5 + 0.1 vs 0.4·u^−0.3 + 0.1 (u = C / 10⁶) cross where u^−0.2 = 0.8: C = 0.8^−5 · 10⁶
    steep = fit_strategy("steep", "flops", [(x, 0.5 * (x / 1e6) ** -0.5 + 0.1) for x in FLOPS], replicates=100)
    flat = fit_strategy("flat", "flops", [(x, 0.4 * (x / 1e6) ** -0.3 + 0.1) for x in FLOPS], replicates=100)
    found = compare(steep, flat)
    assert found is not None
    assert found.crossings == pytest.approx((0.8**-5 * 1e6,), rel=1e-4)
    verdicts = found.separated()
    assert [v for _, _, v in verdicts] == ["flat lower", "steep lower"]
    assert verdicts[0][1] < 0.8**-5 * 1e6 < verdicts[1][0]


def test_strategies_of_one_law_are_not_separated() -> None:
    rng = np.random.default_rng(2)
    truth = law(50.0, 0.3, 0.05)
    twins = [fit_strategy(name, "flops", [(x, e + rng.normal(0, 0.01)) for x, e in zip(FLOPS, truth, strict=True)
                                          for _ in range(2)], replicates=300, seed=i)
             for i, name in enumerate(("first", "second"))]
    found = compare(*twins)
    assert found is not None
    measured = [d for x, d in zip(found.grid, found.difference, strict=True) if x <= FLOPS[-1]]
    assert sum(d.low < 0 < d.high for d in measured) >= 0.9 * len(measured)


def test_records_are_fitted_per_strategy_with_binomial_noise(tmp_path: Path) -> None:
    records = [{"strategy": "dWr", "run_name": f"dWr-s{2**k}-seed{s}", "flops": x, "top1": 1 - e}
               for k, (x, e) in enumerate(zip(FLOPS[:3], law(50.0, 0.3, 0.0)[:3], strict=True)) for s in range(2)]
    records += [{"strategy": "w", "run_name": "w-s1", "flops": 1e6, "top1": 0.2},
                {"strategy": "d", "run_name": "d-s2", "flops": 2e6, "top1": None}]
    fits = fit_records(records, "flops", eval_images=180, replicates=200)
    assert [(f.strategy, f.law.form, f.runs) for f in fits] == [("dWr", "loglinear", 6)]  # w: one point; d: none
    fit = fits[0]
    assert fit.law.b == pytest.approx(0.3) and fit.b.low < 0.3 < fit.b.high and fit.b.high - fit.b.low > 0.01
    (row,) = fit_rows(fits)
    assert FIT_HEADERS[0] == "strategy" and "a·C^(−b)" in row and "(extrapolated)" in row[-1]
    lone = [{**records[-2], "eval_images": 180, "epoch_time_s": 1.0}]  # one point: nothing to fit
    section, none = fit_section(lone, lambda r: str(r["strategy"]), tmp_path, replicates=10)
    assert none == [] and section.text == "No strategy has runs at two or more compute values: nothing to fit."
    image = plot_fits(fits, records, tmp_path / "fits.png")
    assert image.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_comparison_lines_name_crossing_and_separation() -> None:
    steep = fit_strategy("steep", "flops", [(x, 0.5 * (x / 1e6) ** -0.5 + 0.1) for x in FLOPS], replicates=50)
    flat = fit_strategy("flat", "flops", [(x, 0.4 * (x / 1e6) ** -0.3 + 0.1) for x in FLOPS], replicates=50)
    found = compare(steep, flat)
    assert found is not None
    line = comparison_lines([found])[-1]
    assert line.startswith("- steep vs flat over flops (multiply-adds): the fitted curves cross at 3.05e+06")
    assert "flat lower" in line and "steep lower" in line
    with pytest.raises(PipelineError, match="one cost"):
        compare(steep, fit_strategy("t", "acts", [(x, 0.5) for x in (1.0, 2.0)], replicates=10))
    assert math.isfinite(found.difference[0].low)
