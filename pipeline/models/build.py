"""Build the network a ScaleSpec describes, through timm's own builders (never a hand-written block).

One builder per base network, registered under ``ScaleSpec.base``:

- ``efficientnet``: timm's EfficientNet generator with channel/depth multipliers (B0's block strings),
- ``mobilenetv2``: timm's MobileNetV2 generator with the same multipliers,
- ``resnet50``: timm's ResNet-50 with ``layers`` scaled by :func:`round_repeats` and ``channels`` by
  :func:`round_filters`. timm's plain 7×7 stem ignores ``stem_width`` (only its ``deep`` stems use it),
  so the stem stays 64 channels wide: the scaled net is still a ResNet-50 family member, and the stem
  is about 3% of ResNet-50's flops.

Pretrained weights are never loaded: scaled networks have no released weights and runs have no network.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable

import timm
import timm.models.efficientnet as timm_efficientnet
from torch import nn

from pipeline.errors import PipelineError
from pipeline.scaling import ScaleSpec
from pipeline.scaling.rounding import round_filters, round_repeats

Builder = Callable[[ScaleSpec, int, int], nn.Module]

# timm's EfficientNet-family generators are private (``_gen_*``) but are the only entry points that take
# channel/depth multipliers (``timm.create_model`` fixes them per registered variant). Every use goes
# through ``timm_generator`` so that a timm release that renames or reshapes them fails in one place.
TIMM_GENERATORS = {"efficientnet": "_gen_efficientnet", "mobilenetv2": "_gen_mobilenet_v2"}
GENERATOR_PARAMS = ("variant", "channel_multiplier", "depth_multiplier", "pretrained")

RESNET50_LAYERS = (3, 4, 6, 3)
RESNET50_CHANNELS = (64, 128, 256, 512)

_BUILDERS: dict[str, Builder] = {}


def timm_generator(name: str) -> Callable[..., nn.Module]:
    """Return ``timm.models.efficientnet.<name>`` after checking it still takes the multipliers we pass."""
    fn = getattr(timm_efficientnet, name, None)
    params = inspect.signature(fn).parameters if callable(fn) else {}
    missing = [p for p in GENERATOR_PARAMS if p not in params]
    if fn is None or missing:
        raise PipelineError(
            f"timm {timm.__version__} has no timm.models.efficientnet.{name}({', '.join(GENERATOR_PARAMS)}, "
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


@register("efficientnet")
@register("mobilenetv2")
def _efficientnet_family(spec: ScaleSpec, num_classes: int, in_chans: int) -> nn.Module:
    return timm_generator(TIMM_GENERATORS[spec.base])(
        f"{spec.base}-{spec.name}",
        channel_multiplier=spec.w,
        depth_multiplier=spec.d,
        pretrained=False,
        pretrained_cfg=_pretrained_cfg(spec, num_classes, in_chans),
        num_classes=num_classes,
        in_chans=in_chans,
        drop_rate=spec.dropout,
        drop_path_rate=spec.drop_path,
    )


@register("resnet50")
def _resnet50(spec: ScaleSpec, num_classes: int, in_chans: int) -> nn.Module:
    return timm.create_model(
        "resnet50",
        pretrained=False,
        pretrained_cfg=_pretrained_cfg(spec, num_classes, in_chans),
        layers=tuple(round_repeats(n, spec.d) for n in RESNET50_LAYERS),
        channels=tuple(round_filters(c, spec.w) for c in RESNET50_CHANNELS),
        num_classes=num_classes,
        in_chans=in_chans,
        drop_rate=spec.dropout,
        drop_path_rate=spec.drop_path,
    )


def build_model(spec: ScaleSpec, num_classes: int = 1000, in_chans: int = 3) -> nn.Module:
    """Build the randomly initialised network for ``spec`` (base net scaled by spec.d and spec.w).

    The input resolution (spec.r) is not part of the network; it is recorded in the model's timm
    ``pretrained_cfg["input_size"]``. Dropout and drop-path come from the spec.
    """
    if spec.base not in _BUILDERS:
        raise PipelineError(f"no builder for base network {spec.base!r}; choose one of {', '.join(_BUILDERS)}")
    if num_classes < 1 or in_chans < 1:
        raise PipelineError(f"num_classes and in_chans must be >= 1 (got {num_classes}, {in_chans})")
    return _BUILDERS[spec.base](spec, num_classes, in_chans)
