"""``pipeline predict``: LightningCLI's predict over a shard split, written as JSON lines.

    pipeline predict --config runs/<sweep>/<run>/config.yaml --ckpt_path runs/<sweep>/<run>/checkpoints/best.ckpt \
        [--data.test_split val] [--out DIR]

The split is ``data.test_split`` (any split of the manifest). Each line holds a sample's ``key``, ``label``,
``top5`` (class indices, best first) and, for a model with an EMA, ``top5_ema``. The file
``predictions-<split>.jsonl`` goes to ``--out`` or the run directory, written atomically by global rank 0
after gathering every rank's rows, sorted by key.
"""

from __future__ import annotations

import argparse

from pipeline.training.cli import run_cli
from pipeline.training.predict import PredictionWriter


def main(argv: list[str]) -> int:
    """``pipeline predict [--out DIR] <LightningCLI predict options>``: the training CLI plus a PredictionWriter."""
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("--out", default=None)
    known, rest = parser.parse_known_args(argv[1:])
    writer = [f"--trainer.callbacks+={PredictionWriter.__module__}.{PredictionWriter.__name__}"]
    if known.out:
        writer.append(f"--trainer.callbacks.out={known.out}")
    return run_cli(["predict", *rest, *writer])
