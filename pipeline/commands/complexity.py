"""``pipeline complexity``: flops / params / activations of scaled networks, and their growth over the base."""

from __future__ import annotations

import argparse
import json
from typing import TYPE_CHECKING

from pipeline.arguments import OneLineParser, number_list
from pipeline.errors import PipelineError
from pipeline.scaling import BASES, ROUNDINGS, STRATEGIES, VARIANTS, ScaleSpec, resolve_spec
from pipeline.scaling.compound import PAPER_ALPHA, PAPER_BETA, PAPER_GAMMA
from pipeline.scaling.fast import DEFAULT_FAST_ALPHA

if TYPE_CHECKING:
    from pipeline.models.complexity import Complexity

EXAMPLES = f"""\
examples:
  pipeline complexity --variant b0 b1 b2 b3 b4 b5 b6 b7      EfficientNet-B0..B7 (the paper's Table 2)
  pipeline complexity --phi 0..7                              compound scaling, α, β, γ = {PAPER_ALPHA}, {PAPER_BETA}, \
{PAPER_GAMMA}
  pipeline complexity --phi 0,1,2 --alpha 1.4 --beta 1.2 --gamma 1.0
  pipeline complexity --strategy w d r dwr dWr --scale 1,4,16   Dollár et al.'s strategies, flops × s
  pipeline complexity --strategy dWr --scale 4 --fast-alpha 0.8 --json
  pipeline complexity --strategy dWr dwr --scale 4 --rounding tf --stages   TF rounding; depths/widths per stage
  pipeline complexity --base resnet50 --strategy d w --scale 1,2,4
  pipeline complexity --phi 0..3 --base-resolution 32 --num-classes 100   small images (CIFAR)

flops = multiply-adds of conv + linear layers (+1 add per output element with a bias; no batch-norm),
params = all parameters, acts = elements of conv outputs + the classifier's outputs; per image.
Growth columns (×) are relative to the base net (d = w = r = 1) at the base resolution.
Rounding: strategy points default to pycls (Dollár et al.'s scaler), variants and φ to tf (EfficientNet's).
"""


def parser() -> argparse.ArgumentParser:
    """The argument parser of ``pipeline complexity``."""
    p = OneLineParser(
        prog="pipeline complexity",
        description="Print flops, params and activations of scaled networks, and their growth over the base.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    which = p.add_mutually_exclusive_group(required=True)
    which.add_argument("--variant", nargs="+", metavar="B", help=f"named EfficientNet variants: {' '.join(VARIANTS)}")
    which.add_argument("--phi", type=number_list, metavar="LIST", help="compound coefficients φ: 0..7, 0,1,2 or 3")
    which.add_argument(
        "--strategy", nargs="+", choices=STRATEGIES, metavar="S",
        help=f"Dollár et al.'s strategies (one or more of {' '.join(STRATEGIES)}); needs --scale",
    )
    for name, symbol, dimension, default in (("alpha", "α", "depth", PAPER_ALPHA), ("beta", "β", "width", PAPER_BETA),
                                             ("gamma", "γ", "resolution", PAPER_GAMMA)):
        p.add_argument(f"--{name}", type=float, metavar=symbol,
                       help=f"compound {dimension} base {symbol} (default {default}; with --phi)")
    p.add_argument("--scale", type=number_list, metavar="LIST", help="flops factors s for --strategy: 1,2,4,16")
    p.add_argument(
        "--fast-alpha", type=float, metavar="α",
        help=f"α of fast compound scaling dWr, in [0, 1] (default {DEFAULT_FAST_ALPHA}; with --strategy)",
    )
    p.add_argument("--base", choices=list(BASES), default="efficientnet", help="base network (default efficientnet)")
    p.add_argument("--base-resolution", type=int, metavar="PX", help="resolution of the base net (default 224)")
    p.add_argument("--num-classes", type=int, default=1000, metavar="N", help="classifier outputs (default 1000)")
    p.add_argument("--rounding", choices=ROUNDINGS,
                   help="depth/width rounding (default: pycls for --strategy, tf for --variant and --phi)")
    p.add_argument("--stages", action="store_true",
                   help="also print a second table: rounding, depths and widths per stage, stem, head, dropout")
    p.add_argument("--json", action="store_true",
                   help="print one JSON object per row instead of a table (with the per-stage shape)")
    return p


def specs_from_args(args: argparse.Namespace) -> list[ScaleSpec]:
    """The ScaleSpecs the arguments ask for, in order."""
    misplaced = [f"--{name.replace('_', '-')}" for name, needs in
                 (("alpha", "phi"), ("beta", "phi"), ("gamma", "phi"), ("scale", "strategy"),
                  ("fast_alpha", "strategy"))
                 if getattr(args, name) is not None and getattr(args, needs) is None]
    if misplaced:
        raise PipelineError(
            f"{', '.join(misplaced)} given without its mode: --alpha/--beta/--gamma go with --phi, "
            "--scale/--fast-alpha with --strategy"
        )
    common = {"base": args.base, "base_resolution": args.base_resolution, "rounding": args.rounding}
    if args.variant:
        return [resolve_spec(variant=v, **common) for v in args.variant]
    if args.phi is not None:
        abg = {k: getattr(args, k) for k in ("alpha", "beta", "gamma") if getattr(args, k) is not None}
        return [resolve_spec(phi=phi, **abg, **common) for phi in args.phi]
    if args.scale is None:
        raise PipelineError("--strategy needs flops factors: --scale 1,2,4,16")
    fast = {} if args.fast_alpha is None else {"fast_alpha": args.fast_alpha}
    return [resolve_spec(strategy=st, scale=s, **fast, **common) for st in args.strategy for s in args.scale]


def shape_record(spec: ScaleSpec) -> dict[str, object]:
    """The spec's per-stage depths and widths, stem and head (None each where the base's shape is not known here)."""
    shape = spec.stages()
    if shape is None:
        return dict.fromkeys(("depths", "widths", "stem", "head"))
    return {"depths": list(shape.depths), "widths": list(shape.widths), "stem": shape.stem, "head": shape.head}


def rows(specs: list[ScaleSpec], costs: list[Complexity], base: Complexity, num_classes: int) -> list[dict]:
    """One flat record per spec: the spec's fields and shape, its costs and their growth over ``base``."""
    return [
        {**spec.record(), **shape_record(spec), "num_classes": num_classes, "params": c.params, "flops": c.flops,
         "acts": c.acts, "params_growth": c.params / base.params, "flops_growth": c.flops / base.flops,
         "acts_growth": c.acts / base.acts}
        for spec, c in zip(specs, costs, strict=True)
    ]


COLUMNS = (
    ("name", lambda r: r["name"]),
    ("strategy", lambda r: r["strategy"]),
    ("φ|s", lambda r: "-" if r["phi"] is None and r["s"] is None else f"{r['phi'] if r['s'] is None else r['s']:g}"),
    ("d", lambda r: f"{r['d']:.3f}"),
    ("w", lambda r: f"{r['w']:.3f}"),
    ("r", lambda r: f"{r['r']:.3f}"),
    ("res", lambda r: str(r["resolution"])),
    ("params(M)", lambda r: f"{r['params'] / 1e6:.2f}"),
    ("flops(B)", lambda r: f"{r['flops'] / 1e9:.3f}"),
    ("acts(M)", lambda r: f"{r['acts'] / 1e6:.2f}"),
    ("×flops", lambda r: f"{r['flops_growth']:.2f}"),
    ("×params", lambda r: f"{r['params_growth']:.2f}"),
    ("×acts", lambda r: f"{r['acts_growth']:.2f}"),
)


def _listed(values: object) -> str:
    return "-" if values is None else ",".join(str(v) for v in values)  # type: ignore[attr-defined]


STAGE_COLUMNS = (
    ("name", lambda r: r["name"]),
    ("rounding", lambda r: r["rounding"]),
    ("depths", lambda r: _listed(r["depths"])),
    ("widths", lambda r: _listed(r["widths"])),
    ("stem", lambda r: "-" if r["stem"] is None else str(r["stem"])),
    ("head", lambda r: "-" if r["head"] is None else str(r["head"])),
    ("dropout", lambda r: f"{r['dropout']:g}"),
    ("drop_path", lambda r: f"{r['drop_path']:g}"),
    ("dropout by", lambda r: r["dropout_rule"]),
)


def table(records: list[dict], columns: tuple = COLUMNS) -> str:
    """Format records as an aligned text table (the first two columns and text left, numbers right)."""
    cells = [[header for header, _ in columns]] + [[fmt(r) for _, fmt in columns] for r in records]
    widths = [max(len(row[i]) for row in cells) for i in range(len(columns))]
    left = {0, 1} | {i for i, (header, _) in enumerate(columns) if header in ("depths", "widths", "dropout by")}

    def line(row: list[str]) -> str:
        return "  ".join(c.ljust(w) if i in left else c.rjust(w)
                         for i, (c, w) in enumerate(zip(row, widths, strict=True))).rstrip()

    return "\n".join(line(row) for row in cells)


def main(argv: list[str]) -> int:
    """Run ``pipeline complexity``; ``argv[0]`` is the command name."""
    args = parser().parse_args(argv[1:])
    if args.num_classes < 1:
        raise PipelineError(f"--num-classes must be >= 1 (got {args.num_classes})")
    specs = specs_from_args(args)
    base_spec = resolve_spec(base=args.base, phi=0, base_resolution=args.base_resolution)
    from pipeline.models.complexity import measure  # here: --help and usage errors answer without torch

    *costs, base = measure([*specs, base_spec], args.num_classes)
    records = rows(specs, costs, base, args.num_classes)
    if args.json:
        for record in records:
            print(json.dumps(record))
    else:
        print(table(records))
        print(f"× = growth over {args.base} (d = w = r = 1) at {base_spec.resolution} px; flops are multiply-adds")
        if args.stages:
            print()
            print(table(records, STAGE_COLUMNS))
    return 0
