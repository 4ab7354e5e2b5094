"""The scaling math: compound multipliers, Dollár strategies, the grid, rounding and ScaleSpec."""

from __future__ import annotations

import math

import pytest

from pipeline.errors import PipelineError
from pipeline.scaling import (
    STRATEGIES,
    VARIANTS,
    compound_multipliers,
    grid_candidates,
    resolve_spec,
    spread_candidates,
    strategy_exponents,
    strategy_multipliers,
)
from pipeline.scaling.compound import flops_factor
from pipeline.scaling.rounding import round_filters, round_repeats, round_resolution

# Dollár et al., Table in papers.md: (e_d, e_w, e_r) per strategy.
PAPER_EXPONENTS = {
    "d": (1, 0, 0),
    "w": (0, 0.5, 0),
    "r": (0, 0, 0.5),
    "dw": (0.5, 0.25, 0),
    "dr": (0.5, 0, 0.25),
    "wr": (0, 0.25, 0.25),
    "dwr": (1 / 3, 1 / 6, 1 / 6),
    "dWr": (0.1, 0.4, 0.05),
}


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_strategy_exponents_match_the_paper_and_conserve_flops(strategy: str) -> None:
    e = strategy_exponents(strategy)
    assert e == pytest.approx(PAPER_EXPONENTS[strategy])
    assert e[0] + 2 * e[1] + 2 * e[2] == pytest.approx(1.0)
    d, w, r = strategy_multipliers(strategy, 16.0)
    assert d * w**2 * r**2 == pytest.approx(16.0)


@pytest.mark.parametrize(("fast_alpha", "same_as"), [(0.0, "dr"), (1 / 3, "dwr"), (1.0, "w")])
def test_fast_alpha_endpoints_are_the_named_strategies(fast_alpha: float, same_as: str) -> None:
    assert strategy_exponents("dWr", fast_alpha) == pytest.approx(strategy_exponents(same_as))


def test_compound_multipliers_and_paper_constants() -> None:
    d, w, r = compound_multipliers(2)
    assert (d, w, r) == pytest.approx((1.44, 1.21, 1.3225))
    assert compound_multipliers(0) == (1.0, 1.0, 1.0)
    assert flops_factor(1.2, 1.1, 1.15) == pytest.approx(1.9203, abs=1e-4)


def test_grid_contains_paper_point_and_respects_tolerance() -> None:
    found = grid_candidates(target=2.0, tolerance=0.1, step=0.05)
    assert (1.2, 1.1, 1.15) in found
    assert all(min(abg) >= 1 and abs(flops_factor(*abg) - 2) <= 0.1 + 1e-9 for abg in found)
    assert found[0] == (2.0, 1.0, 1.0)  # exactly 2: depth only
    assert len(grid_candidates(target=2.0, tolerance=0.0, step=0.05)) < len(found)
    # step 0.1 (the sweep's default) misses 1.15: the paper's point is added, and only inside the box
    coarse = grid_candidates(target=2.0, tolerance=0.1, low=1.0, high=1.4, step=0.1)
    assert len(coarse) == 16 and (1.2, 1.1, 1.15) in coarse
    assert (1.2, 1.1, 1.15) not in grid_candidates(target=2.0, tolerance=0.1, low=1.0, high=1.12, step=0.1)


def test_spread_candidates_is_farthest_point_from_the_paper() -> None:
    coarse = grid_candidates(target=2.0, tolerance=0.1, low=1.0, high=1.4, step=0.1)
    # paper first; then (1, 1.4, 1) at 0.39 from it; (1, 1, 1.4) at min(0.335, 0.566); (1.4, 1.2, 1) at 0.269
    assert spread_candidates(coarse, 4) == [(1.2, 1.1, 1.15), (1.0, 1.4, 1.0), (1.0, 1.0, 1.4), (1.4, 1.2, 1.0)]
    assert coarse[:4] == [(1.4, 1.0, 1.2), (1.4, 1.2, 1.0), (1.2, 1.0, 1.3), (1.2, 1.3, 1.0)]  # nearest to 2
    assert sorted(spread_candidates(coarse, 99)) == sorted(coarse)
    without = [c for c in coarse if c != (1.2, 1.1, 1.15)]
    assert spread_candidates(without, 2) == [without[0], (1.0, 1.4, 1.0)]  # no paper point: the first seeds


def test_rounding_rules() -> None:
    assert [round_filters(32, w) for w in (1.0, 1.1, 1.2, 1.4, 2.0)] == [32, 32, 40, 48, 64]
    assert round_filters(1280, 1.1) == 1408  # timm's efficientnet_b2 head
    assert round_filters(16, 0.25) == 8  # never below the divisor
    assert round_filters(100, 0.57) == 56  # 57 → 56 (≥ 90% of 57 keeps it)
    assert round_filters(20, 1.0, divisor=16) == 32  # 16 < 0.9·20 → bumped up by a divisor
    assert [round_repeats(n, 3.1) for n in (1, 2, 3, 4)] == [4, 7, 10, 13]
    assert round_repeats(3, 1.0) == 3
    assert [round_resolution(x) for x in (224 * 1.15, 224 * 1.15**2, 30, 1)] == [256, 296, 32, 4]


def test_named_variants_keep_official_numbers_not_powers() -> None:
    b7 = resolve_spec(variant="b7")
    assert (b7.w, b7.d, b7.resolution, b7.dropout) == (2.0, 3.1, 600, 0.5)
    assert b7.d != pytest.approx(1.2**7)
    phi7 = resolve_spec(phi=7)
    assert phi7.d == pytest.approx(1.2**7) and phi7.resolution == round_resolution(224 * 1.15**7)
    assert all(v.resolution % 4 == 0 for v in VARIANTS.values())  # why resolutions round to 4


def test_one_mechanism_for_all_three_sources() -> None:
    variant, compound, fast = resolve_spec(variant="b0"), resolve_spec(phi=0), resolve_spec(strategy="dWr", scale=1)
    for spec in (variant, compound, fast):
        assert (spec.d, spec.w, spec.resolution) == (1.0, 1.0, 224)
    assert (variant.name, compound.name, fast.name) == ("b0", "phi0", "dWr-s1")
    assert resolve_spec(strategy="dWr", scale=4, fast_alpha=0.5).name == "dWr0.5-s4"
    assert fast.record()["fast_alpha"] == 0.8 and compound.record()["alpha"] == 1.2


def test_base_resolution_for_small_images() -> None:
    b2 = resolve_spec(variant="b2", base_resolution=64)
    assert b2.r == pytest.approx(260 / 224) and b2.resolution == round_resolution(64 * 260 / 224) == 76
    spec = resolve_spec(phi=2, base_resolution=32)
    assert spec.resolution == round_resolution(32 * 1.15**2) == 44
    assert resolve_spec(phi=1, base_resolution=32, resolution=64).resolution == 64


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"phi": -1}, "phi must be >= 0"),
        ({"phi": 1, "alpha": 0.9}, "alpha must be >= 1"),
        ({"strategy": "dwx", "scale": 4}, "unknown strategy 'dwx'"),
        ({"strategy": "dWr", "scale": 4, "fast_alpha": 1.5}, "fast_alpha must be in [0, 1]"),
        ({"strategy": "w", "scale": 0}, "must be > 0"),
        ({"strategy": "w"}, "needs a flops factor"),
        ({"variant": "b9"}, "unknown variant 'b9'"),
        ({"variant": "b0", "phi": 1}, "exactly one of"),
        ({}, "exactly one of"),
        ({"phi": 0, "resolution": 16}, "smaller than the efficientnet output stride 32"),
        ({"phi": 0, "base": "vgg"}, "unknown base network"),
        ({"variant": "b1", "base": "resnet50"}, "named variants are EfficientNet's"),
    ],
)
def test_bad_input_is_one_clear_error(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(PipelineError) as info:
        resolve_spec(**kwargs)  # type: ignore[arg-type]
    assert message in str(info.value)
    assert "\n" not in str(info.value)


def test_growth_is_about_two_to_the_phi() -> None:
    for phi in range(8):
        d, w, r = compound_multipliers(phi)
        assert d * w**2 * r**2 == pytest.approx(1.9203**phi, rel=1e-3)
        assert math.log2(d * w**2 * r**2) == pytest.approx(phi, abs=0.06 * phi + 1e-9)
