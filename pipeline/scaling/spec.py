"""ScaleSpec: the one description of a point in scaling space.

Named variants (B0–B7), compound φ and Dollár strategies all become a ScaleSpec through
``resolve_spec``; nothing downstream (models, data, training, reports) knows which made it.
"""

from __future__ import annotations

import inspect
from dataclasses import asdict, dataclass

from pipeline.errors import PipelineError
from pipeline.scaling.compound import PAPER_ALPHA, PAPER_BETA, PAPER_GAMMA, compound_multipliers
from pipeline.scaling.fast import DEFAULT_FAST_ALPHA, strategy_multipliers
from pipeline.scaling.rounding import round_resolution


@dataclass(frozen=True)
class Base:
    """A base network that the scaler grows: its native resolution, output stride and dropout."""

    resolution: int
    stride: int
    dropout: float


BASES: dict[str, Base] = {
    "efficientnet": Base(resolution=224, stride=32, dropout=0.2),
    "mobilenetv2": Base(resolution=224, stride=32, dropout=0.2),
    "resnet50": Base(resolution=224, stride=32, dropout=0.0),
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


@dataclass(frozen=True)
class ScaleSpec:
    """A scaled network: base net, multipliers d/w/r, input resolution, regularisation, provenance.

    ``strategy`` is ``"variant"``, ``"compound"`` or a Dollár strategy name; the provenance fields
    (phi, s, alpha, beta, gamma, fast_alpha) are None where they do not apply.
    """

    base: str
    d: float
    w: float
    r: float
    resolution: int
    dropout: float
    drop_path: float
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
    drop_path: float = 0.2,
) -> ScaleSpec:
    """Make the ScaleSpec for exactly one of: ``variant``, ``phi`` (with α, β, γ), ``strategy`` + ``scale``.

    ``base_resolution`` replaces the base net's native resolution (e.g. 32 for small images) and
    is scaled by r; ``resolution`` overrides the final resolution outright; ``dropout`` overrides
    the per-variant dropout.
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
    if not 0 <= drop_path < 1:
        raise PipelineError(f"drop_path must be in [0, 1) (got {drop_path})")
    if dropout is not None and not 0 <= dropout < 1:
        raise PipelineError(f"dropout must be in [0, 1) (got {dropout})")
    info = BASES[base]
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
        drop = v.dropout
        fields = {"strategy": "variant", "name": key}
    elif phi is not None:
        d, w, r = compound_multipliers(phi, alpha, beta, gamma)
        res = round_resolution(res0 * r)
        nearest = VARIANTS[f"b{min(7, round(phi))}"] if base == "efficientnet" else None
        drop = nearest.dropout if nearest else info.dropout
        fields = {"strategy": "compound", "name": f"phi{_fmt(phi)}", "phi": phi,
                  "alpha": alpha, "beta": beta, "gamma": gamma}
    else:
        assert strategy is not None
        if scale is None:
            raise PipelineError(f"strategy {strategy!r} needs a flops factor: --scale S (e.g. 4)")
        d, w, r = strategy_multipliers(strategy, scale, fast_alpha)
        res = round_resolution(res0 * r)
        drop = info.dropout
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
    return ScaleSpec(
        base=base, d=d, w=w, r=r, resolution=int(res),
        dropout=drop if dropout is None else dropout, drop_path=drop_path,
        **fields,  # type: ignore[arg-type]
    )


# The keyword arguments of resolve_spec: the config keys that describe a point in scaling space.
SPEC_KEYS: tuple[str, ...] = tuple(inspect.signature(resolve_spec).parameters)
