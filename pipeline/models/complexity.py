"""Flops, parameters and activations of a built network, in the papers' convention.

The convention (Dollár et al.'s pycls ``complexity``; the EfficientNet paper's "FLOPs"):

- **flops**: multiply-adds of convolution and linear layers only, ``k²·c_in·c_out·h·w / groups``, plus
  one add per output element where the layer has a bias. Batch-norm, activations, pooling and
  element-wise ops count nothing (fvcore's default ``FlopCountAnalysis`` also counts batch-norm: ~3.5%
  more on EfficientNet-B0).
- **params**: every parameter of the model (batch-norm running statistics are buffers, not parameters).
- **acts**: elements of every convolution's output plus every linear layer's output (the bases have one
  linear layer, the classifier).

Counted per image (batch 1) with torch's ``FlopCounterMode`` and formulas of our own for the ops that
conv and linear layers dispatch to (``aten.convolution``; ``aten.addmm`` with a bias, ``aten.mm``
without): torch's default formulas count 2 FLOPs per multiply-add and no bias. Two counters with one
formula set each (multiply-adds, output elements) run nested over one eager forward pass; only the ops
below are read from them, so any other op counts zero by design. A compiled module is refused: its
graph would dispatch fused or decomposed ops that these formulas do not see.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from math import prod
from typing import Any

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode
from tqdm import tqdm

from pipeline.errors import PipelineError
from pipeline.models.build import build_model
from pipeline.scaling import ScaleSpec
from pipeline.scaling.cost import effnet_cost

aten = torch.ops.aten
Shape = list[int]


@dataclass(frozen=True)
class Complexity:
    """The three costs of one network at one resolution, per image."""

    flops: int
    params: int
    acts: int


def conv_flops(x_shape: Shape, w_shape: Shape, bias: Shape | None, stride: Any, padding: Any, dilation: Any,
               transposed: bool, *args: Any, out_shape: Shape, **kwargs: Any) -> int:
    """``aten.convolution``: ``k²·c_in·c_out·h·w / groups`` multiply-adds, + one add per output with a bias.

    The weight is ``[c_out, c_in / groups, k, k]`` (transposed: ``[c_in, c_out / groups, k, k]``, each input
    element then meets every filter tap), so the multiply-adds are elements × ``prod(w_shape[1:])``.
    """
    macs = prod(x_shape if transposed else out_shape) * prod(w_shape[1:])
    return macs + (prod(out_shape) if bias is not None else 0)


def addmm_flops(bias: Shape, a_shape: Shape, b_shape: Shape, *args: Any, out_shape: Shape, **kwargs: Any) -> int:
    """``aten.addmm`` (a linear layer with a bias): ``m·k·n`` multiply-adds + ``m·n`` bias adds."""
    return prod(a_shape) * b_shape[1] + prod(out_shape)


def mm_flops(a_shape: Shape, b_shape: Shape, *args: Any, out_shape: Shape, **kwargs: Any) -> int:
    """``aten.mm`` (a linear layer without a bias): ``m·k·n`` multiply-adds."""
    return prod(a_shape) * b_shape[1]


def output_elements(*args: Any, out_shape: Shape, **kwargs: Any) -> int:
    """Elements of the op's output (the activations it writes)."""
    return prod(out_shape)


FLOP_FORMULAS: dict[Any, Callable[..., int]] = {aten.convolution: conv_flops, aten.addmm: addmm_flops,
                                                aten.mm: mm_flops}
ACT_FORMULAS: dict[Any, Callable[..., int]] = dict.fromkeys(FLOP_FORMULAS, output_elements)


def output_stride(model: nn.Module) -> int:
    """The network's total downsampling factor, from timm's ``feature_info`` (1 if it has none)."""
    return max((int(info["reduction"]) for info in getattr(model, "feature_info", [])), default=1)


def count_complexity(model: nn.Module, resolution: int, in_chans: int = 3) -> Complexity:
    """Count flops, params and acts of ``model`` on one ``in_chans × resolution × resolution`` image.

    The model runs eagerly in eval mode without gradients (its train/eval mode is restored), on the device
    and dtype of its parameters. Raises PipelineError if ``resolution`` is below the net's output stride,
    and ValueError for a compiled module (count before ``torch.compile``).
    """
    if hasattr(model, "_orig_mod") or getattr(model, "_compiled_call_impl", None) is not None:  # torch.compile'd
        raise ValueError("count_complexity needs the eager module: count before torch.compile / module.compile()")
    stride = output_stride(model)
    if resolution < stride:
        raise PipelineError(
            f"resolution {resolution} is smaller than the network's output stride {stride}; "
            f"use a resolution of at least {stride} px"
        )
    first = next(model.parameters(), torch.zeros(()))
    image = torch.zeros(1, in_chans, resolution, resolution, device=first.device, dtype=first.dtype)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), FlopCounterMode(display=False, custom_mapping=FLOP_FORMULAS) as flops, \
                FlopCounterMode(display=False, custom_mapping=ACT_FORMULAS) as acts:
            model(image)
    finally:
        model.train(was_training)
    return Complexity(
        flops=_total(flops), params=sum(p.numel() for p in model.parameters()), acts=_total(acts))


def _total(counter: FlopCounterMode) -> int:
    """The count of the ops we have formulas for (torch's defaults for other ops are left out)."""
    counts = counter.get_flop_counts().get("Global", {})
    return sum(counts.get(op, 0) for op in FLOP_FORMULAS)


class CostCounter:
    """Flops, params and acts of built networks, each distinct network (``ScaleSpec.network_key``) counted once."""

    def __init__(self, num_classes: int) -> None:
        self.num_classes = num_classes
        self.counted: dict[tuple[Any, ...], Complexity] = {}

    def __call__(self, spec: ScaleSpec) -> Complexity:
        """The built network's complexity (``count_complexity`` of ``build_model(spec)``)."""
        key = spec.network_key()
        if key not in self.counted:
            self.counted[key] = count_complexity(build_model(spec, num_classes=self.num_classes), spec.resolution)
        return self.counted[key]

    def flops(self, spec: ScaleSpec) -> int:
        """The built network's flops; for an EfficientNet shape pycls's complexity rules give them without
        building (``effnet_cost``, equal to the count to the last digit: tests/models/test_pycls_build.py)."""
        shape = spec.stages()
        if spec.base == "efficientnet" and shape is not None:
            return effnet_cost(shape, spec.resolution, self.num_classes).flops
        return self(spec).flops


def measure(specs: list[ScaleSpec], num_classes: int) -> list[Complexity]:
    """Build and count each spec (identical networks are counted once); progress on a terminal's stderr."""
    counter = CostCounter(num_classes)
    return [counter(spec) for spec in
            tqdm(specs, desc="counting", unit="net", disable=None if len(specs) > 1 else True, leave=False)]
