"""One regularisation rule for any point in scaling space: dropout by the built network's flops.

The EfficientNet paper sets dropout per named variant (B0–B7: 0.2, 0.2, 0.3, 0.3, 0.4, 0.4, 0.5, 0.5) and
stochastic depth ("drop connect") 0.2 for all. A point that is not a named variant takes the dropout
interpolated linearly in log flops growth between those anchors, where a point's growth is its built
network's flops (its rounding, its resolution) over the base network's at the base resolution, and an
anchor's is B{k}'s flops at its resolution over B0's at 224 px. Outside B0..B7 the nearest anchor's value
holds. So two points of equal cost get equal dropout whatever their strategy or rounding. Drop-path stays
at 0.2: the anchors never vary it, so there is nothing to interpolate. Bases other than EfficientNet have
no anchors and keep their own dropout.
"""

from __future__ import annotations

import bisect
import math

from pipeline.scaling.cost import effnet_cost
from pipeline.scaling.rounding import Stages

DROP_PATH = 0.2  # tensorflow/tpu efficientnet_builder.py: drop_connect_rate 0.2 for every variant


def anchors(b0: Stages, variants: dict[str, tuple[float, float, int, float]]) -> list[tuple[float, float]]:
    """(log flops growth over B0 at 224 px, dropout) of each named variant ``name: (d, w, resolution, dropout)``."""
    base = effnet_cost(b0, 224).flops
    return sorted(
        (math.log(effnet_cost(b0.scaled(d, w, "tf"), res).flops / base), dropout)
        for d, w, res, dropout in variants.values()
    )


def dropout_by_flops(growth: float, points: list[tuple[float, float]]) -> float:
    """Dropout at flops ``growth`` (× the base net), linear in log growth between ``points``, clamped at the ends."""
    x = math.log(growth)
    xs = [p[0] for p in points]
    i = bisect.bisect_right(xs, x)
    if i == 0:
        return points[0][1]
    if i == len(points):
        return points[-1][1]
    (x0, y0), (x1, y1) = points[i - 1], points[i]
    return round(y0 + (y1 - y0) * (x - x0) / (x1 - x0), 3)
