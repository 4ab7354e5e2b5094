"""One regularisation rule for any point: dropout by the built network's flops between the B0–B7 anchors."""

from __future__ import annotations

import math

import pytest

from pipeline.scaling import VARIANTS, resolve_spec
from pipeline.scaling.cost import effnet_cost
from pipeline.scaling.regularisation import dropout_by_flops
from pipeline.scaling.spec import DROPOUT_ANCHORS, EFFICIENTNET_B0

B0_FLOPS = 385_825_092  # tests/models/test_complexity.py COUNTED["b0"], pycls's rules


def growth(**kwargs: object) -> float:
    spec = resolve_spec(**kwargs)  # type: ignore[arg-type]
    shape = spec.stages()
    assert shape is not None
    return effnet_cost(shape, spec.resolution).flops / B0_FLOPS


def test_anchors_are_b0_to_b7_flops_and_dropout() -> None:
    # B{k}'s counted flops over B0's (test_complexity.COUNTED): 1.78, 2.58, 4.74, 11.39, 26.61, 49.42, 97.83
    assert [round(math.exp(x), 2) for x, _ in DROPOUT_ANCHORS] == [1.0, 1.78, 2.58, 4.74, 11.39, 26.61, 49.42, 97.83]
    assert [y for _, y in DROPOUT_ANCHORS] == [v.dropout for v in VARIANTS.values()]
    for x, y in DROPOUT_ANCHORS:
        assert dropout_by_flops(math.exp(x), DROPOUT_ANCHORS) == y


def test_interpolation_is_linear_in_log_flops_and_clamped() -> None:
    (x1, _), (x2, _) = DROPOUT_ANCHORS[1:3]  # B1 (0.2) → B2 (0.3)
    assert dropout_by_flops(math.exp((x1 + x2) / 2), DROPOUT_ANCHORS) == 0.25
    assert dropout_by_flops(0.5, DROPOUT_ANCHORS) == 0.2  # below B0
    assert dropout_by_flops(500.0, DROPOUT_ANCHORS) == 0.5  # beyond B7


def test_named_variants_keep_the_papers_values() -> None:
    for name, v in VARIANTS.items():
        spec = resolve_spec(variant=name)
        assert (spec.dropout, spec.drop_path, spec.dropout_rule) == (v.dropout, 0.2, "variant")


def test_equal_cost_gets_equal_regularisation_whatever_the_strategy() -> None:
    """Compound φ = 2 (4.693× B0) and dWr at s = 4.68 (pycls-built: 4.732×) sit between B2 and B3 (4.736×): 0.3."""
    phi2, fast = resolve_spec(phi=2), resolve_spec(strategy="dWr", scale=4.68)
    assert growth(phi=2) == pytest.approx(4.693, abs=1e-3)
    assert growth(strategy="dWr", scale=4.68) == pytest.approx(4.732, abs=1e-3)
    assert (phi2.dropout, phi2.drop_path, phi2.dropout_rule) == (fast.dropout, fast.drop_path, fast.dropout_rule) == (
        0.3, 0.2, "flops")
    # φ = 1 is B2's architecture at 256 px (2.23×, between B1 and B2), not B1's 0.2 that "nearest variant" gave
    assert growth(phi=1) == pytest.approx(2.229, abs=1e-3) and resolve_spec(phi=1).dropout == 0.261
    # one step of dWr's depth rounding past B3's flops, dropout starts to grow
    assert growth(strategy="dWr", scale=4.7) == pytest.approx(5.097, abs=1e-3)
    assert resolve_spec(strategy="dWr", scale=4.7).dropout == 0.308
    # The rule reads the built network: the same dWr point under TF rounding costs 5.18× and gets more
    assert resolve_spec(strategy="dWr", scale=4).dropout == 0.3 < resolve_spec(strategy="dWr", scale=4,
                                                                               rounding="tf").dropout == 0.31


def test_an_explicit_value_wins_and_other_bases_keep_theirs() -> None:
    given = resolve_spec(strategy="dWr", scale=16, dropout=0.25, drop_path=0.1)
    assert (given.dropout, given.drop_path, given.dropout_rule) == (0.25, 0.1, "given")
    assert resolve_spec(variant="b7", dropout=0.1).dropout_rule == "given"
    resnet = resolve_spec(base="resnet50", strategy="d", scale=16)
    assert (resnet.dropout, resnet.dropout_rule) == (0.0, "base")
    assert resolve_spec(phi=2).record()["dropout_rule"] == "flops"


def test_small_images_use_growth_over_the_base_at_its_resolution() -> None:
    """At 32 px the base is B0 at 32 px: φ = 2 grows 4.69× at 224 px and (rounding 42.3 → 44 px) 5.95× at 32."""
    small = resolve_spec(phi=2, base_resolution=32)
    shape = small.stages()
    assert shape is not None
    ratio = effnet_cost(shape, small.resolution).flops / effnet_cost(EFFICIENTNET_B0, 32).flops
    assert ratio == pytest.approx(5.95, abs=0.01)
    assert small.dropout == dropout_by_flops(ratio, DROPOUT_ANCHORS) == 0.326
