"""The networks timm builds for pycls-rounded specs are pycls's networks: counted costs equal pycls's own.

tests/scaling/test_pycls.py holds pycls's numbers (from running facebookresearch/pycls's ``scale_model`` and
``EffNet.complexity``). Here the same points are built with timm and counted by ``count_complexity``: its
convention is pycls's (multiply-adds + bias adds, batch-norm weights in params, conv and linear outputs in
acts; see pipeline/models/complexity.py), so the counts must be equal to the last digit, and so must the
torch-free estimate ``pipeline.scaling.cost.effnet_cost`` that the regularisation rule uses.
"""

from __future__ import annotations

import pytest

from pipeline.models.build import build_model
from pipeline.models.complexity import Complexity, count_complexity
from pipeline.scaling import VARIANTS, resolve_spec
from pipeline.scaling.cost import effnet_cost
from tests.models.test_complexity import COUNTED
from tests.scaling.test_pycls import PYCLS


@pytest.mark.parametrize(("strategy", "scale"), list(PYCLS))
def test_built_pycls_points_count_as_pycls(strategy: str, scale: int) -> None:
    spec = resolve_spec(strategy=strategy, scale=scale)
    expected = PYCLS[strategy, scale]
    assert spec.resolution == expected["resolution"]
    counted = count_complexity(build_model(spec), spec.resolution)
    assert counted == Complexity(flops=expected["flops"], params=expected["params"], acts=expected["acts"])


@pytest.mark.slow
def test_cost_estimate_equals_the_count_for_b0_to_b7() -> None:
    """The regularisation anchors (B0–B7 flops) the scaling layer computes without torch are the counted ones."""
    for name in VARIANTS:
        spec = resolve_spec(variant=name)
        shape = spec.stages()
        assert shape is not None
        cost = effnet_cost(shape, spec.resolution)
        assert Complexity(cost.flops, cost.params, cost.acts) == COUNTED[name], name


def test_cost_estimate_equals_the_count_under_tf_rounding() -> None:
    """TF rounding at a strategy point and at a compound φ: estimate and count agree too."""
    for spec in (resolve_spec(strategy="dWr", scale=4, rounding="tf"), resolve_spec(phi=2)):
        shape = spec.stages()
        assert shape is not None
        cost = effnet_cost(shape, spec.resolution)
        assert count_complexity(build_model(spec), spec.resolution) == Complexity(cost.flops, cost.params, cost.acts)
