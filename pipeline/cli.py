"""The ``pipeline`` command: one entry point, one subcommand per job.

Each subcommand is a module of :mod:`pipeline.commands` exposing ``main(argv) -> int``; a module is
imported only when its command runs (by its name in ``COMMANDS``, the one module-name import of the
package), so ``pipeline --help`` is instant.
"""

from __future__ import annotations

import importlib
import sys

from pipeline import preemption  # standard library only
from pipeline.errors import PipelineError, message_line

COMMANDS: dict[str, tuple[str, str]] = {
    "fit": ("pipeline.commands.fit", "train or fine-tune a scaled model (LightningCLI; --help for all keys)"),
    "validate": ("pipeline.commands.fit", "evaluate a checkpoint on the validation split"),
    "test": ("pipeline.commands.fit", "evaluate a checkpoint on the test split"),
    "complexity": ("pipeline.commands.complexity", "flops/params/activations for variants, φ or strategies"),
    "shards": ("pipeline.commands.shards", "write webdataset shards from a dataset's on-disk format"),
    "results": ("pipeline.commands.results", "table of finished runs' result records"),
    "sweep": ("pipeline.commands.sweep", "plan and train a scaling study: grid (α, β, γ), scale, transfer"),
    "report": ("pipeline.commands.report", "report.md + report.html of sweeps: accuracy, cost, growth, runtime"),
    "demo": ("pipeline.commands.demo", "a miniature study: digits, compound φ = 0,1,2 and dWr at matched flops"),
    "predict": ("pipeline.commands.predict", "write a checkpoint's top-5 predictions on a shard split (JSONL)"),
    "export": ("pipeline.commands.export", "write a run's network as safetensors + config.json for timm"),
    "submit": ("pipeline.commands.submit", "check a SLURM request against its config, then sbatch it"),
}


def usage() -> str:
    """The top-level help text."""
    width = max(map(len, COMMANDS))
    lines = ["usage: pipeline <command> [options]   (pipeline <command> --help for details)", "", "commands:"]
    lines += [f"  {name:<{width}}  {text}" for name, (_, text) in COMMANDS.items()]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Dispatch to a subcommand; a PipelineError becomes one line on stderr and exit status 2."""
    preemption.install()  # in a SLURM job: a requeue signal while torch imports is recorded, not fatal
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(usage())
        return 0 if argv else 2
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        print(f"pipeline: unknown command {name!r}\n\n{usage()}", file=sys.stderr)
        return 2
    module = importlib.import_module(COMMANDS[name][0])
    try:
        return int(module.main([name, *rest]) or 0)
    except PipelineError as err:
        print(f"pipeline {name}: error: {message_line(err)}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
