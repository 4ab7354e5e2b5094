"""``pipeline export <run dir or .ckpt> [--out DIR] [--ema/--no-ema]``: safetensors + timm config.json."""

from __future__ import annotations

import argparse

from pipeline.arguments import OneLineParser


def parser() -> argparse.ArgumentParser:
    """The command line of ``pipeline export``."""
    p = OneLineParser(prog="pipeline export", description=(
        "Write a run's network as model.safetensors + config.json (timm's hub format plus the timm generator "
        "call), loadable with timm alone; see pipeline/training/export.py for the loading snippet."))
    p.add_argument("source", help="a run directory (its checkpoints/best.ckpt) or a .ckpt file")
    p.add_argument("--out", default=None, help="output folder (default: <run dir>/export)")
    p.add_argument("--ema", action=argparse.BooleanOptionalAction, default=True,
                   help="export the EMA weights (default; the weights the paper reports) or the raw ones")
    return p


def main(argv: list[str]) -> int:
    """Run ``pipeline export``; ``argv[0]`` is the command name."""
    args = parser().parse_args(argv[1:])
    from pipeline.training.export import export

    folder = export(args.source, args.out, ema=args.ema)
    print(f"exported {'EMA' if args.ema else 'raw'} weights to {folder}/model.safetensors + config.json")
    return 0
