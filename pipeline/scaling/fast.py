"""Dollár, Singh & Girshick's scaling family: flops × s with d = s^e_d, w = s^e_w, r = s^e_r.

The exponents always satisfy e_d + 2·e_w + 2·e_r = 1 (flops ∝ d·w²·r²). A strategy names the
dimensions that grow; each named dimension takes an equal share of the flops growth (e.g. ``dw``:
e_d = 1/2, e_w = 1/4). ``dWr`` is *fast compound scaling*: e_d = (1−α)/2, e_w = α/2,
e_r = (1−α)/4, recommended α = 0.8.
"""

from __future__ import annotations

from pipeline.errors import PipelineError

STRATEGIES = ("d", "w", "r", "dw", "dr", "wr", "dwr", "dWr")
DEFAULT_FAST_ALPHA = 0.8


def strategy_exponents(strategy: str, fast_alpha: float = DEFAULT_FAST_ALPHA) -> tuple[float, float, float]:
    """Return (e_d, e_w, e_r) for a strategy; ``fast_alpha`` is used only by ``dWr``."""
    if strategy not in STRATEGIES:
        raise PipelineError(f"unknown strategy {strategy!r}; choose one of {', '.join(STRATEGIES)}")
    if strategy == "dWr":
        if not 0 <= fast_alpha <= 1:
            raise PipelineError(f"fast_alpha must be in [0, 1] (got {fast_alpha}); the paper uses 0.8")
        return (1 - fast_alpha) / 2, fast_alpha / 2, (1 - fast_alpha) / 4
    share = 1 / len(strategy)
    return (
        share if "d" in strategy else 0.0,
        share / 2 if "w" in strategy else 0.0,
        share / 2 if "r" in strategy else 0.0,
    )


def strategy_multipliers(
    strategy: str, s: float, fast_alpha: float = DEFAULT_FAST_ALPHA
) -> tuple[float, float, float]:
    """Return the (depth, width, resolution) multipliers that scale flops by ``s``."""
    if not s > 0:
        raise PipelineError(f"flops scale s must be > 0 (got {s}); s=1 is the base network")
    e_d, e_w, e_r = strategy_exponents(strategy, fast_alpha)
    return s**e_d, s**e_w, s**e_r
