"""Command-line argument helpers shared by every command: a parser whose usage mistakes are one-line errors, and
the number-list syntax (``0..7``, ``0,1,2``) of φ and scale lists, and counts (``--seeds``)."""

from __future__ import annotations

import argparse
import math
from typing import NoReturn

from pipeline.errors import PipelineError


class OneLineParser(argparse.ArgumentParser):
    """argparse whose usage mistakes become one-line PipelineErrors (exit 2, nothing written) instead of
    usage text + exit."""

    def error(self, message: str) -> NoReturn:
        """Raise the mistake as a PipelineError pointing at ``--help``."""
        raise PipelineError(f"{message} (see {self.prog} --help)")


def number_list(text: str) -> list[float]:
    """Parse ``0..7`` (integers, inclusive), ``0,1,2`` or ``3`` into a list of finite numbers."""
    try:
        if ".." in text:
            low, high = (int(part) for part in text.split(".."))
            values = [float(v) for v in range(low, high + 1)]
        else:
            values = [float(part) for part in text.split(",")]
    except ValueError:
        values = []
    if not values or not all(math.isfinite(v) for v in values):
        raise argparse.ArgumentTypeError(f"{text!r} is not a list of numbers: write e.g. 0..7, 0,1,2 or 3")
    return values


def count(text: str) -> int:
    """Parse a count ≥ 1 (``--seeds 3``)."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a count >= 1")
    return value
