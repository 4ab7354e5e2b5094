"""Build the network a ScaleSpec describes, through timm's own builders (never a hand-written block).

One builder per base network, registered under ``ScaleSpec.base``:

- ``efficientnet``, ``tf`` rounding: timm's EfficientNet generator with channel/depth multipliers (B0's
  block strings; timm rounds as TF does),
- ``efficientnet``, ``pycls`` rounding: timm's EfficientNet factory (``_create_effnet``) with B0's block
  strings carrying the pycls-rounded repeats and channels of :meth:`ScaleSpec.stages`, and the
  pycls-rounded stem and head (timm's own rounding, ``round_channels`` at multiplier 1, keeps multiples
  of 8 as they are),
- ``mobilenetv2``: timm's MobileNetV2 generator with the multipliers (``tf`` rounding only),
- ``resnet50``: timm's ResNet-50 with ``layers`` and ``channels`` of :meth:`ScaleSpec.stages` (either
  rounding). timm's plain 7×7 stem ignores ``stem_width`` (only its ``deep`` stems use it), so the stem
  stays 64 channels wide: the scaled net is still a ResNet-50 family member, and the stem is about 3% of
  ResNet-50's flops.

Pretrained weights are never loaded: scaled networks have no released weights and runs have no network.
"""

from __future__ import annotations

import copy
import importlib
import inspect
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import timm
import timm.models.efficientnet as timm_efficientnet
from timm.models._efficientnet_builder import decode_arch_def
from torch import nn

from pipeline.errors import PipelineError
from pipeline.scaling import ScaleSpec
from pipeline.scaling.cost import EFFNET_EXP_RATIOS, EFFNET_KERNELS, EFFNET_SE_RATIO, EFFNET_STRIDES
from pipeline.scaling.rounding import Stages
from pipeline.scaling.spec import VARIANTS


@dataclass(frozen=True)
class TimmCall:
    """One call into timm that builds a network: ``<module>.<function>(**kwargs)``.

    ``kwargs`` hold JSON values only, so the call can be written out (``pipeline export``'s config.json) and
    replayed by a timm user without this package. ``architecture`` is the name timm registers for exactly this
    network (``efficientnet_b3``, ``resnet50``), or None for scaled nets that only the generator builds.
    """

    module: str
    function: str
    kwargs: dict[str, Any]
    architecture: str | None

    def build(self) -> nn.Module:
        """Run the call (through the private-API guard for timm's generators) on a copy of the kwargs.

        timm's EfficientNet builder pops keys from the ``block_args`` dicts it is given.
        """
        kwargs = copy.deepcopy(self.kwargs)
        if self.module == timm_efficientnet.__name__:
            return timm_generator(self.function)(**kwargs)
        return getattr(importlib.import_module(self.module), self.function)(**kwargs)


Builder = Callable[[ScaleSpec, int, int], TimmCall]

# timm's EfficientNet-family generators are private (``_gen_*``, ``_create_effnet``) but are the only entry
# points that take channel/depth multipliers or explicit block strings (``timm.create_model`` fixes them per
# registered variant). Every use goes through ``timm_generator`` so that a timm release that renames or
# reshapes them fails in one place.
TIMM_GENERATORS = {"efficientnet": "_gen_efficientnet", "mobilenetv2": "_gen_mobilenet_v2"}
EXPLICIT_GENERATOR = "_create_effnet"
GENERATOR_PARAMS = {
    "_gen_efficientnet": ("variant", "channel_multiplier", "depth_multiplier", "pretrained"),
    "_gen_mobilenet_v2": ("variant", "channel_multiplier", "depth_multiplier", "pretrained"),
    EXPLICIT_GENERATOR: ("variant", "pretrained"),
}

# timm's registered names for the multipliers (base, w, d) its own models use: B0–B7, MobileNetV2 1.0
REGISTERED = {
    **{("efficientnet", v.width, v.depth): f"efficientnet_{k}" for k, v in VARIANTS.items()},
    ("mobilenetv2", 1.0, 1.0): "mobilenetv2_100",
}

_BUILDERS: dict[str, Builder] = {}


def timm_generator(name: str) -> Callable[..., nn.Module]:
    """Return ``timm.models.efficientnet.<name>`` after checking it still takes the multipliers we pass."""
    fn = getattr(timm_efficientnet, name, None)
    params = inspect.signature(fn).parameters if callable(fn) else {}
    wanted = GENERATOR_PARAMS.get(name, ())
    missing = [p for p in wanted if p not in params]
    if fn is None or missing:
        raise PipelineError(
            f"timm {timm.__version__} has no timm.models.efficientnet.{name}({', '.join(wanted)}, "
            f"**kwargs) (missing: {', '.join(missing) or name}); install the timm pinned in requirements.txt "
            "or adapt pipeline/models/build.py to the new private API"
        )
    return fn


def register(base: str) -> Callable[[Builder], Builder]:
    """Register a builder for the base network ``base`` (a key of ``pipeline.scaling.BASES``)."""

    def add(builder: Builder) -> Builder:
        _BUILDERS[base] = builder
        return builder

    return add


def _pretrained_cfg(spec: ScaleSpec, num_classes: int, in_chans: int) -> dict[str, object]:
    # timm models carry a data config (input size, mean/std, crop) that ``timm.data.resolve_data_config``
    # reads; give scaled nets their own, at their own resolution, with no weight source.
    return {
        "architecture": f"{spec.base}-{spec.name}",
        "input_size": (in_chans, spec.resolution, spec.resolution),
        "num_classes": num_classes,
    }


def effnet_block_strings(shape: Stages) -> list[list[str]]:
    """timm block strings of B0's stages with ``shape``'s repeats and channels (timm ``_gen_efficientnet``)."""
    return [
        [f"{'ds' if exp == 1 else 'ir'}_r{d}_k{k}_s{s}_e{exp}_c{c}_se{EFFNET_SE_RATIO}"]
        for d, c, exp, k, s in zip(shape.depths, shape.widths, EFFNET_EXP_RATIOS, EFFNET_KERNELS, EFFNET_STRIDES,
                                   strict=True)
    ]


@register("efficientnet")
@register("mobilenetv2")
def _efficientnet_family(spec: ScaleSpec, num_classes: int, in_chans: int) -> TimmCall:
    common = {
        "variant": f"{spec.base}-{spec.name}",
        "pretrained": False,
        "pretrained_cfg": _pretrained_cfg(spec, num_classes, in_chans),
        "num_classes": num_classes,
        "in_chans": in_chans,
        "drop_rate": spec.dropout,
        "drop_path_rate": spec.drop_path,
    }
    if spec.rounding == "tf":
        kwargs = {"channel_multiplier": spec.w, "depth_multiplier": spec.d, **common}
        return TimmCall(timm_efficientnet.__name__, TIMM_GENERATORS[spec.base], kwargs,
                        REGISTERED.get((spec.base, spec.w, spec.d)))
    shape = spec.stages()
    assert spec.base == "efficientnet" and shape is not None and shape.head is not None  # resolve_spec's checks
    # decode_arch_def turns the strings into plain dicts: the call stays JSON; "swish" is what
    # _gen_efficientnet resolves its act_layer from, and timm's default BatchNorm2d is its norm_layer
    kwargs = {
        "block_args": decode_arch_def(effnet_block_strings(shape)),
        "stem_size": shape.stem,
        "num_features": shape.head,
        "act_layer": "swish",
        **common,
    }
    return TimmCall(timm_efficientnet.__name__, EXPLICIT_GENERATOR, kwargs, None)


@register("resnet50")
def _resnet50(spec: ScaleSpec, num_classes: int, in_chans: int) -> TimmCall:
    shape = spec.stages()
    assert shape is not None  # BASES["resnet50"] has its stages
    kwargs = {
        "model_name": "resnet50",
        "pretrained": False,
        "pretrained_cfg": _pretrained_cfg(spec, num_classes, in_chans),
        "layers": list(shape.depths),
        "channels": list(shape.widths),
        "num_classes": num_classes,
        "in_chans": in_chans,
        "drop_rate": spec.dropout,
        "drop_path_rate": spec.drop_path,
    }
    # timm's resnet50() lets these kwargs override its layers: "resnet50" rebuilds every scaled ResNet-50
    return TimmCall(timm.__name__, "create_model", kwargs, "resnet50")


def timm_call(spec: ScaleSpec, num_classes: int = 1000, in_chans: int = 3) -> TimmCall:
    """The timm call that builds the network for ``spec`` (what :func:`build_model` runs and export writes)."""
    if spec.base not in _BUILDERS:
        raise PipelineError(f"no builder for base network {spec.base!r}; choose one of {', '.join(_BUILDERS)}")
    if num_classes < 1 or in_chans < 1:
        raise PipelineError(f"num_classes and in_chans must be >= 1 (got {num_classes}, {in_chans})")
    return _BUILDERS[spec.base](spec, num_classes, in_chans)


def build_model(spec: ScaleSpec, num_classes: int = 1000, in_chans: int = 3) -> nn.Module:
    """Build the randomly initialised network for ``spec`` (base net scaled by spec.d and spec.w).

    The input resolution (spec.r) is not part of the network; it is recorded in the model's timm
    ``pretrained_cfg["input_size"]``. Dropout and drop-path come from the spec.
    """
    return timm_call(spec, num_classes, in_chans).build()
