"""Scaled networks through timm's builders, and their complexity (flops, params, activations)."""

from pipeline.models.build import build_model
from pipeline.models.complexity import Complexity, count_complexity

__all__ = ["Complexity", "build_model", "count_complexity"]
