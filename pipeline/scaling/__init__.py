"""Pure scaling math (no torch): the ScaleSpec, compound scaling, Dollár's fast scaling, rounding."""

from pipeline.scaling.compound import compound_multipliers, grid_candidates, spread_candidates
from pipeline.scaling.fast import STRATEGIES, strategy_exponents, strategy_multipliers
from pipeline.scaling.rounding import ROUNDINGS, Stages
from pipeline.scaling.spec import BASES, VARIANTS, ScaleSpec, resolve_spec

__all__ = [
    "BASES",
    "ROUNDINGS",
    "STRATEGIES",
    "VARIANTS",
    "ScaleSpec",
    "Stages",
    "compound_multipliers",
    "grid_candidates",
    "resolve_spec",
    "spread_candidates",
    "strategy_exponents",
    "strategy_multipliers",
]
