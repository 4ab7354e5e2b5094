"""Flops, parameters and activations of a built network, in the papers' convention.

The convention (Dollár et al.'s pycls ``complexity``; the EfficientNet paper's "FLOPs"):

- **flops**: multiply-adds of convolution and linear layers only, ``k²·c_in·c_out·h·w / groups``, plus
  one add per output element where the layer has a bias. Batch-norm, activations, pooling and
  element-wise ops count nothing (fvcore's default ``FlopCountAnalysis`` also counts batch-norm: ~3.5%
  more on EfficientNet-B0).
- **params**: every parameter of the model (batch-norm running statistics are buffers, not parameters).
- **acts**: elements of every convolution's output plus every linear layer's output (the bases have one
  linear layer, the classifier).

Counted per image (batch 1) by tracing the model with fvcore's ``JitModelAnalysis`` and explicit op
handles; every op without a handle counts zero by design.
"""

from __future__ import annotations

import warnings
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from math import prod
from typing import Any

import torch
from torch import nn

from pipeline.errors import PipelineError

with warnings.catch_warnings():
    # fvcore.nn's __init__ jit-scripts its focal loss, which torch >= 2.10 flags as deprecated on import.
    warnings.filterwarnings("ignore", message=r"`torch\.jit\.script` is deprecated", category=FutureWarning)
    from fvcore.nn.jit_analysis import JitModelAnalysis
    from fvcore.nn.jit_handles import conv_flop_jit, get_shape, linear_flop_jit

Handle = Callable[[list[Any], list[Any]], Counter]


@dataclass(frozen=True)
class Complexity:
    """The three costs of one network at one resolution, per image."""

    flops: int
    params: int
    acts: int


def _cost_handle(mac_handle: Callable[[list[Any], list[Any]], Any]) -> Handle:
    """Wrap an fvcore multiply-add handle of a layer whose input #2 is its bias (aten::_convolution,
    aten::linear) into one that returns both costs of the paper's convention for that layer."""

    def handle(inputs: list[Any], outputs: list[Any]) -> Counter:
        macs = mac_handle(inputs, outputs)
        macs = sum(macs.values()) if isinstance(macs, Counter) else macs
        out_elements = prod(get_shape(outputs[0]))
        bias_adds = out_elements if get_shape(inputs[2]) is not None else 0
        # One handle, one trace: the Counter keys are the two costs rather than op names.
        return Counter({"flops": int(macs) + bias_adds, "acts": out_elements})

    return handle


COUNTED_OPS: dict[str, Handle] = {
    "aten::_convolution": _cost_handle(conv_flop_jit),
    "aten::linear": _cost_handle(linear_flop_jit),
}


def output_stride(model: nn.Module) -> int:
    """The network's total downsampling factor, from timm's ``feature_info`` (1 if it has none)."""
    return max((int(info["reduction"]) for info in getattr(model, "feature_info", [])), default=1)


def count_complexity(model: nn.Module, resolution: int, in_chans: int = 3) -> Complexity:
    """Count flops, params and acts of ``model`` on one ``in_chans × resolution × resolution`` image.

    The model is traced in eval mode without gradients (its train/eval mode is restored), on the device
    and dtype of its parameters. Raises PipelineError if ``resolution`` is below the net's output stride.
    """
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
        with torch.no_grad():
            analysis = JitModelAnalysis(model, (image,)).set_op_handle(**COUNTED_OPS)
            analysis.unsupported_ops_warnings(False).uncalled_modules_warnings(False)
            costs = analysis.by_operator()
    finally:
        model.train(was_training)
    return Complexity(
        flops=int(costs["flops"]),
        params=sum(p.numel() for p in model.parameters()),
        acts=int(costs["acts"]),
    )
