"""The study's statistics against known answers: textbook intervals, hand-computed spreads, r and slopes."""

from __future__ import annotations

import math

import pytest
from scipy import stats

from pipeline.errors import PipelineError
from pipeline.experiments.stats import (
    Z95,
    accuracy_interval,
    comparable_groups,
    correlation,
    growth_fit,
    point_name,
    point_summary,
    runtime_correlations,
    summarise_points,
    within_noise,
)


@pytest.mark.parametrize("k, n", [(0, 10), (8, 10), (10, 10), (161, 180), (9000, 10000)])
@pytest.mark.parametrize("method", ["wilson", "exact"])
def test_intervals_are_scipys(k: int, n: int, method: str) -> None:
    ci = stats.binomtest(k, n).proportion_ci(confidence_level=0.95, method=method)
    assert accuracy_interval(k / n, n, method) == (ci.low, ci.high)


def test_intervals_match_textbook_values() -> None:
    # 8 of 10: Wilson (0.490, 0.943), Clopper–Pearson (0.444, 0.975) (Newcombe 1998, Table I; Agresti–Coull 1998)
    assert accuracy_interval(0.8, 10) == pytest.approx((0.4902, 0.9433), abs=1e-4)
    assert accuracy_interval(0.8, 10, "exact") == pytest.approx((0.4439, 0.9748), abs=1e-4)
    # 10 of 10: Wald's interval has zero width; Wilson's lower end is n / (n + z²) = 10 / 13.84
    low, high = accuracy_interval(1.0, 10)
    assert low == pytest.approx(10 / (10 + Z95**2), rel=1e-5) and high == 1.0


def test_bad_interval_requests_are_refused() -> None:
    with pytest.raises(PipelineError, match="wilson, exact"):
        accuracy_interval(0.5, 10, "wald")
    with pytest.raises(PipelineError, match="n ≥ 1"):
        accuracy_interval(0.5, 0)


def test_point_summary_is_mean_sd_and_both_errors() -> None:
    summary = point_summary("dWr-s2", [0.8, 0.9], 100)
    assert (summary.seeds, summary.mean) == (2, pytest.approx(0.85))
    assert summary.sd == pytest.approx(math.sqrt(0.005))  # ((0.05)² + (0.05)²) / 1
    # binomial 0.85·0.15/100 = 0.001275, seeds 0.005/2 = 0.0025
    assert summary.se == pytest.approx(math.sqrt(0.003775))
    one = point_summary("w-s2", [0.85], 100)
    assert one.sd is None and one.se == pytest.approx(math.sqrt(0.001275))


def test_points_group_their_seeds() -> None:
    assert point_name("dWr-s4-seed12") == "dWr-s4" and point_name("seedling-s2") == "seedling-s2"
    records = [{"run_name": "w-s2-seed0", "top1": 0.8}, {"run_name": "w-s2-seed1", "top1": 0.9},
               {"run_name": "w-s4", "top1": 0.7}, {"run_name": "d-s2-seed0", "top1": None}]
    assert [(p.point, p.seeds, round(p.mean, 6)) for p in summarise_points(records, 100)] == [
        ("w-s2", 2, 0.85), ("w-s4", 1, 0.7)]


def test_within_noise_uses_the_binomial_error_and_the_seed_spread() -> None:
    best = point_summary("a", [0.9, 0.9], 400)  # se = √(0.9·0.1/400) = 0.015, no seed spread
    other = point_summary("b", [0.86, 0.86], 400)  # se = √(0.86·0.14/400) = 0.017349
    limit = Z95 * math.sqrt(0.015**2 + 0.86 * 0.14 / 400)  # 0.04496
    assert 0.04 < limit < 0.05
    assert within_noise(best, other)
    assert not within_noise(best, point_summary("c", [0.85, 0.85], 400))
    # the same mean 0.85 with a seed spread of 0.1 is within noise: its mean is uncertain to ±0.07
    assert within_noise(best, point_summary("d", [0.8, 0.9], 400))


def test_pearson_r_and_its_interval() -> None:
    three = correlation([1, 2, 3], [2, 4, 6.5])
    assert three is not None and three.r == pytest.approx(4.5 / math.sqrt(2 * 61 / 6))
    assert correlation([1, 2], [1, 2]) is None and correlation([1, 1, 1], [1, 2, 3]) is None
    found = correlation([0, 1, 2, 3, 4], [0, 1, 3, 2, 5])
    # Σdxdy = 11, Σdx² = 10, Σdy² = 14.8; Fisher's z ± 1.96 / √(n − 3)
    r = 11 / math.sqrt(10 * 14.8)
    assert found is not None and (found.r, found.n) == (pytest.approx(r), 5)
    z, half = math.atanh(r), Z95 / math.sqrt(5 - 3)
    assert (found.low, found.high) == pytest.approx((math.tanh(z - half), math.tanh(z + half)), rel=1e-5)


def _run(kind: str, accelerator: str, acts: float, seconds: float) -> dict:
    return {"sweep_kind": kind, "dataset": "digits", "accelerator": accelerator, "world_size": 2,
            "acts": math.exp(acts), "flops": math.exp(2 * acts), "epoch_time_s": math.exp(seconds)}


def test_runtime_r_is_per_group_of_comparable_runs_on_logs() -> None:
    # cpu scale runs: log acts 0, 1, 2 vs log time 0, 1, 3 → r = 3 / √(2 · 42/9) = 9 / √84;
    # cuda scale runs: time ∝ acts^0.5 exactly → r = 1; a grid run of the cpu machine is a group of its own
    records = [_run("scale", "cpu", a, t) for a, t in ((0, 0), (1, 1), (2, 3))]
    records += [_run("scale", "cuda", a, a / 2 - 5) for a in (0, 1, 2, 3)]
    records += [_run("grid", "cpu", 1, 1), {**_run("scale", "cpu", 5, 0), "epoch_time_s": None}]
    found = runtime_correlations(records, "acts")
    assert list(found) == [("scale", "digits", "cpu", 2), ("scale", "digits", "cuda", 2), ("grid", "digits", "cpu", 2)]
    cpu, cuda, grid = found.values()
    assert cpu is not None and cpu.r == pytest.approx(9 / math.sqrt(84)) and cpu.n == 3
    assert cuda is not None and cuda.r == pytest.approx(1.0) and cuda.n == 4
    assert grid is None
    # pooled, the cuda machine's shorter times hide both groups' near-perfect correlation
    pooled = correlation([math.log(r["acts"]) for r in records[:7]],
                         [math.log(r["epoch_time_s"]) for r in records[:7]])
    assert pooled is not None and abs(pooled.r) < 0.1
    assert [len(g) for g in comparable_groups(records).values()] == [4, 4, 1]


def test_growth_exponent_with_standard_error() -> None:
    # log x 0, 1, 2 → log y 0, 1, 2.1: slope 1.05, residuals (1/60, −2/60, 1/60) → se = √(SSE/(n−2) / Σdx²)
    fit = growth_fit([1, math.e, math.e**2], [1, math.e, math.exp(2.1)])
    se = math.sqrt((6 / 3600) / 2)
    assert fit is not None and (fit.k, fit.se, fit.n) == (pytest.approx(1.05), pytest.approx(se), 3)
    assert (fit.low, fit.high) == pytest.approx((1.05 - 12.7062 * se, 1.05 + 12.7062 * se), rel=1e-5)  # t(1)
    exact = growth_fit([1e6, 2e6, 4e6, 8e6], [f**0.6 for f in (1e6, 2e6, 4e6, 8e6)])
    assert exact is not None and exact.k == pytest.approx(0.6) and exact.se < 1e-7
    two = growth_fit([1, 2], [1, 4])
    assert two is not None and two.k == pytest.approx(2.0) and two.se is None
    assert growth_fit([3, 3], [1, 2]) is None
