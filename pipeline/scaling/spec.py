"""ScaleSpec: the one description of a point in scaling space.

Named variants (B0–B7), compound φ and Dollár strategies all become a ScaleSpec through
``resolve_spec``; nothing downstream (models, data, training, reports) knows which made it. The spec names
its rounding rule (``tf`` or ``pycls``, see :mod:`pipeline.scaling.rounding`) and where its dropout came
from (``dropout_rule``, see :mod:`pipeline.scaling.regularisation`).
"""

from __future__ import annotations

import inspect
from dataclasses import asdict, dataclass
from typing import Any

from pipeline.errors import PipelineError
from pipeline.scaling.compound import PAPER_ALPHA, PAPER_BETA, PAPER_GAMMA, compound_multipliers
from pipeline.scaling.cost import effnet_cost
from pipeline.scaling.fast import DEFAULT_FAST_ALPHA, strategy_multipliers
from pipeline.scaling.regularisation import DROP_PATH, anchors, dropout_by_flops
from pipeline.scaling.rounding import Stages, check_rounding, round_resolution


@dataclass(frozen=True)
class Base:
    """A base network that the scaler grows: its native resolution, output stride, dropout and shape.

    ``stages`` is the shape the rounding rules scale; None where only timm's own multipliers (``tf``
    rounding) are supported.
    """

    resolution: int
    stride: int
    dropout: float
    stages: Stages | None


EFFICIENTNET_B0 = Stages(depths=(1, 2, 2, 3, 3, 4, 1), widths=(16, 24, 40, 80, 112, 192, 320), stem=32, head=1280)
# timm's resnet50: Bottleneck counts and widths (timm ``resnet50`` layers / channels); 7×7 stem fixed at 64
RESNET50 = Stages(depths=(3, 4, 6, 3), widths=(64, 128, 256, 512), stem=64, head=None, fixed_stem=True)

BASES: dict[str, Base] = {
    "efficientnet": Base(resolution=224, stride=32, dropout=0.2, stages=EFFICIENTNET_B0),
    "mobilenetv2": Base(resolution=224, stride=32, dropout=0.2, stages=None),
    "resnet50": Base(resolution=224, stride=32, dropout=0.0, stages=RESNET50),
}


@dataclass(frozen=True)
class Variant:
    """An official EfficientNet variant (tensorflow/tpu ``efficientnet_builder.py``)."""

    width: float
    depth: float
    resolution: int
    dropout: float


VARIANTS: dict[str, Variant] = {
    "b0": Variant(1.0, 1.0, 224, 0.2),
    "b1": Variant(1.0, 1.1, 240, 0.2),
    "b2": Variant(1.1, 1.2, 260, 0.3),
    "b3": Variant(1.2, 1.4, 300, 0.3),
    "b4": Variant(1.4, 1.8, 380, 0.4),
    "b5": Variant(1.6, 2.2, 456, 0.4),
    "b6": Variant(1.8, 2.6, 528, 0.5),
    "b7": Variant(2.0, 3.1, 600, 0.5),
}

DROPOUT_ANCHORS = anchors(EFFICIENTNET_B0,
                          {k: (v.depth, v.width, v.resolution, v.dropout) for k, v in VARIANTS.items()})


@dataclass(frozen=True)
class ScaleSpec:
    """A scaled network: base net, multipliers d/w/r, rounding, input resolution, regularisation, provenance.

    ``rounding`` (``tf`` | ``pycls``) turns d and w into block counts and channels. ``dropout_rule`` says
    where ``dropout`` came from: ``variant`` (the paper's per-variant value), ``flops`` (interpolated in the
    built network's flops), ``base`` (the base net's own) or ``given``. ``strategy`` is ``"variant"``,
    ``"compound"`` or a Dollár strategy name; the provenance fields (phi, s, alpha, beta, gamma, fast_alpha)
    are None where they do not apply.
    """

    base: str
    d: float
    w: float
    r: float
    rounding: str
    resolution: int
    dropout: float
    drop_path: float
    dropout_rule: str
    strategy: str
    name: str
    phi: float | None = None
    s: float | None = None
    alpha: float | None = None
    beta: float | None = None
    gamma: float | None = None
    fast_alpha: float | None = None

    def record(self) -> dict[str, object]:
        """The spec as a flat dict, for configs, W&B and result records."""
        return asdict(self)

    def stages(self) -> Stages | None:
        """Blocks and channels per stage, stem and head of the network this spec builds (None if unknown here)."""
        shape = BASES[self.base].stages
        if shape is None:
            return None
        return shape.scaled(self.d, self.w, self.rounding)

    def network_key(self) -> tuple[Any, ...]:
        """What the built network depends on: base, blocks and channels per stage (or d, w and rounding where the
        base has no stage shape here), and resolution. Two specs with one key build the same network."""
        shape = self.stages()
        return (self.base, shape if shape is not None else (self.d, self.w, self.rounding), self.resolution)


def _fmt(x: float) -> str:
    return f"{x:g}"


def resolve_spec(
    *,
    base: str = "efficientnet",
    variant: str | None = None,
    phi: float | None = None,
    alpha: float = PAPER_ALPHA,
    beta: float = PAPER_BETA,
    gamma: float = PAPER_GAMMA,
    strategy: str | None = None,
    scale: float | None = None,
    fast_alpha: float = DEFAULT_FAST_ALPHA,
    base_resolution: int | None = None,
    resolution: int | None = None,
    dropout: float | None = None,
    drop_path: float | None = None,
    rounding: str | None = None,
) -> ScaleSpec:
    """Make the ScaleSpec for exactly one of: ``variant``, ``phi`` (with α, β, γ), ``strategy`` + ``scale``.

    ``base_resolution`` replaces the base net's native resolution (e.g. 32 for small images) and
    is scaled by r; ``resolution`` overrides the final resolution outright. ``rounding`` defaults to
    ``pycls`` for strategy points (Dollár et al.'s own scaler; where the base has a pycls shape) and to
    ``tf`` for variants and compound φ. ``dropout`` and ``drop_path`` override the regularisation rule
    (:mod:`pipeline.scaling.regularisation`): variants keep the paper's dropout, other points take it
    from their built network's flops.
    """
    if base not in BASES:
        raise PipelineError(f"unknown base network {base!r}; choose one of {', '.join(BASES)}")
    chosen = [k for k, v in (("variant", variant), ("phi", phi), ("strategy", strategy)) if v is not None]
    if len(chosen) != 1:
        raise PipelineError(
            "give exactly one of variant (b0..b7), phi (compound scaling) or strategy + scale "
            f"(Dollár scaling); got {', '.join(chosen) or 'none'}"
        )
    if strategy is None and scale is not None:
        raise PipelineError("scale (flops factor s) only applies together with a strategy")
    if drop_path is not None and not 0 <= drop_path < 1:
        raise PipelineError(f"drop_path must be in [0, 1) (got {drop_path})")
    if dropout is not None and not 0 <= dropout < 1:
        raise PipelineError(f"dropout must be in [0, 1) (got {dropout})")
    info = BASES[base]
    if rounding is None:
        rounding = "pycls" if strategy is not None and info.stages is not None else "tf"
    check_rounding(rounding)
    if rounding == "pycls" and info.stages is None:
        raise PipelineError(f"pycls rounding needs the base's stage shape, which {base!r} lacks; use rounding tf")
    res0 = info.resolution if base_resolution is None else base_resolution
    fields: dict[str, object] = {}
    if variant is not None:
        key = variant.lower()
        if key not in VARIANTS:
            raise PipelineError(f"unknown variant {variant!r}; choose one of {', '.join(VARIANTS)}")
        if base != "efficientnet":
            raise PipelineError(f"named variants are EfficientNet's; use phi or a strategy for base {base!r}")
        v = VARIANTS[key]
        d, w = v.depth, v.width
        r = v.resolution / BASES["efficientnet"].resolution
        res = v.resolution if base_resolution is None else round_resolution(res0 * r)
        drop: float | None = v.dropout
        fields = {"strategy": "variant", "name": key}
    elif phi is not None:
        d, w, r = compound_multipliers(phi, alpha, beta, gamma)
        res = round_resolution(res0 * r)
        drop = None
        fields = {"strategy": "compound", "name": f"phi{_fmt(phi)}", "phi": phi,
                  "alpha": alpha, "beta": beta, "gamma": gamma}
    else:
        assert strategy is not None
        if scale is None:
            raise PipelineError(f"strategy {strategy!r} needs a flops factor: --scale S (e.g. 4)")
        d, w, r = strategy_multipliers(strategy, scale, fast_alpha)
        res = round_resolution(res0 * r)
        drop = None
        # dWr's α is part of the name only when it is not the paper's, so α sweeps get distinct runs
        label = strategy if strategy != "dWr" or fast_alpha == DEFAULT_FAST_ALPHA else f"dWr{_fmt(fast_alpha)}"
        fields = {"strategy": strategy, "name": f"{label}-s{_fmt(scale)}", "s": scale,
                  "fast_alpha": fast_alpha if strategy == "dWr" else None}
    if resolution is not None:
        res = resolution
    if res < info.stride:
        raise PipelineError(
            f"resolution {res} is smaller than the {base} output stride {info.stride}; "
            f"use a resolution of at least {info.stride} px"
        )
    if dropout is not None:
        drop, rule = dropout, "given"
    elif drop is not None:
        rule = "variant"
    elif base == "efficientnet":
        built = EFFICIENTNET_B0.scaled(d, w, rounding)
        drop = dropout_by_flops(effnet_cost(built, res).flops / effnet_cost(EFFICIENTNET_B0, res0).flops,
                                DROPOUT_ANCHORS)
        rule = "flops"
    else:
        drop, rule = info.dropout, "base"
    return ScaleSpec(
        base=base, d=d, w=w, r=r, rounding=rounding, resolution=int(res), dropout=drop,
        drop_path=DROP_PATH if drop_path is None else drop_path, dropout_rule=rule,
        **fields,  # type: ignore[arg-type]
    )


# The keyword arguments of resolve_spec: the config keys that describe a point in scaling space.
SPEC_KEYS: tuple[str, ...] = tuple(inspect.signature(resolve_spec).parameters)
