"""EfficientNet compound scaling: d = α^φ, w = β^φ, r = γ^φ with α·β²·γ² ≈ 2, and the grid search."""

from __future__ import annotations

import itertools
import math

from pipeline.errors import PipelineError

PAPER_ALPHA, PAPER_BETA, PAPER_GAMMA = 1.2, 1.1, 1.15


def check_compound(phi: float, alpha: float, beta: float, gamma: float) -> None:
    """Refuse compound coefficients outside the paper's domain (φ ≥ 0; α, β, γ ≥ 1)."""
    if phi < 0:
        raise PipelineError(f"phi must be >= 0 (got {phi}); phi=0 is the base network")
    for name, value in (("alpha", alpha), ("beta", beta), ("gamma", gamma)):
        if value < 1:
            raise PipelineError(
                f"{name} must be >= 1 (got {value}): compound scaling only grows a dimension; "
                "use a Dollár strategy (--strategy) to shape growth differently"
            )


def compound_multipliers(
    phi: float, alpha: float = PAPER_ALPHA, beta: float = PAPER_BETA, gamma: float = PAPER_GAMMA
) -> tuple[float, float, float]:
    """Return the (depth, width, resolution) multipliers (α^φ, β^φ, γ^φ)."""
    check_compound(phi, alpha, beta, gamma)
    return alpha**phi, beta**phi, gamma**phi


def flops_factor(alpha: float, beta: float, gamma: float) -> float:
    """FLOPs growth per unit of φ: α·β²·γ² (FLOPs ∝ d·w²·r²)."""
    return alpha * beta**2 * gamma**2


def grid_candidates(
    target: float = 2.0,
    tolerance: float = 0.1,
    low: float = 1.0,
    high: float = 2.0,
    step: float = 0.05,
) -> list[tuple[float, float, float]]:
    """All (α, β, γ) on the grid ``low, low+step, …, high`` with |α·β²·γ² − target| ≤ tolerance, and the
    paper's (1.2, 1.1, 1.15) whenever it lies in that box and tolerance (at step 0.1 it is off the lattice).

    This is step 1 of the paper (φ = 1, small grid search). Sorted by distance to the target, then by (α, β, γ).
    """
    if not low >= 1:
        raise PipelineError(f"grid low end must be >= 1 (got {low}): compound coefficients are >= 1")
    if high < low or step <= 0:
        raise PipelineError(f"grid needs high >= low and step > 0 (got low={low}, high={high}, step={step})")
    if target <= 1 or tolerance < 0:
        raise PipelineError(f"grid needs target > 1 and tolerance >= 0 (got {target}, {tolerance})")
    count = round((high - low) / step) + 1
    values = [round(low + i * step, 10) for i in range(count)]
    lattice = set(itertools.product(values, repeat=3))
    paper = (PAPER_ALPHA, PAPER_BETA, PAPER_GAMMA)
    if all(low <= v <= high for v in paper):
        lattice.add(paper)
    found = [abg for abg in lattice if abs(flops_factor(*abg) - target) <= tolerance + 1e-12]
    return sorted(found, key=lambda abg: (abs(flops_factor(*abg) - target), abg))


def spread_candidates(candidates: list[tuple[float, float, float]], count: int) -> list[tuple[float, float, float]]:
    """``count`` of ``candidates`` spread over the (α, β, γ) box: farthest-point sampling (each next pick is
    the candidate farthest, in Euclidean distance, from those picked), seeded with the paper's point if it is a
    candidate, else the first. Ties go to the earlier candidate, so the choice is deterministic."""
    paper = (PAPER_ALPHA, PAPER_BETA, PAPER_GAMMA)
    picked = [paper if paper in candidates else candidates[0]] if candidates else []
    while len(picked) < min(count, len(candidates)):
        rest = [c for c in candidates if c not in picked]
        picked.append(max(rest, key=lambda c: min(math.dist(c, p) for p in picked)))
    return picked
