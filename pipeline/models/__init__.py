"""Scaled networks through timm's builders, and their complexity (flops, params, activations).

Names are imported on first use (PEP 562) so that ``pipeline complexity --help`` and its argument errors
do not pay for importing torch and timm.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pipeline.models.build import build_model
    from pipeline.models.complexity import Complexity, count_complexity

_EXPORTS = {
    "build_model": "pipeline.models.build",
    "Complexity": "pipeline.models.complexity",
    "count_complexity": "pipeline.models.complexity",
}
__all__ = ["Complexity", "build_model", "count_complexity"]


def __getattr__(name: str) -> Any:
    """Import an exported name on first access."""
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name]), name)
