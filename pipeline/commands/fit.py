"""``pipeline fit|validate|test``: train or evaluate a scaled model (LightningCLI; ``--help`` lists every key)."""

from __future__ import annotations

from pipeline.training.cli import run_cli


def main(argv: list[str]) -> int:
    """Run ``argv`` = [fit|validate|test, options…]; config mistakes raise PipelineError (one line, exit 2)."""
    return run_cli(argv)
