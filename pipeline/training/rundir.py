"""Run directories: ``<root>/<sweep or "single">/<run name>/`` and the W&B run id kept inside them."""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from pathlib import Path

from pipeline.errors import PipelineError
from pipeline.io import atomic_write_text
from pipeline.scaling import ScaleSpec

SINGLE = "single"
WANDB_ID_FILE = "wandb_id"
CHECKPOINT_DIR = "checkpoints"


@dataclass
class RunOptions:
    """Where a run lives and how it is named (the ``run.*`` keys of ``pipeline fit``).

    Args:
        root: directory holding all runs.
        sweep: sweep name (runs of one sweep share a directory and a W&B group); None = "single".
        name: run name; None = derived from the scaling spec (``compound-phi2``, ``dWr-s4``, ``b3``).
        dataset: dataset tag appended to the derived name (transfer runs); None = no tag.
        source_run: the run this one was fine-tuned from (transfer runs), recorded in result.json.
        project: W&B project.
        monitor: metric that picks ``best.ckpt``.
    """

    root: str = "runs"
    sweep: str | None = None
    name: str | None = None
    dataset: str | None = None
    source_run: str | None = None
    project: str = "compound-scaling"
    monitor: str = "val/top1"


def run_name(spec: ScaleSpec, dataset: str | None = None) -> str:
    """The default run name: strategy and φ or s (and the base net if not EfficientNet, the dataset if given)."""
    parts = [] if spec.base == "efficientnet" else [spec.base]
    parts.append(f"compound-{spec.name}" if spec.strategy == "compound" else spec.name)
    if dataset:
        parts.append(dataset)
    return "-".join(parts)


def run_dir(options: RunOptions, spec: ScaleSpec) -> Path:
    """The run directory for ``options`` and ``spec`` (not created here)."""
    name = options.name or run_name(spec, options.dataset)
    for label, part in (("run.name", name), ("run.sweep", options.sweep or SINGLE)):
        if not part or "/" in part or part in (".", ".."):
            raise PipelineError(f"{label} must be a plain directory name (got {part!r})")
    return Path(options.root) / (options.sweep or SINGLE) / name


def wandb_run_id(directory: Path, create: bool) -> str | None:
    """The W&B run id stored in ``directory/wandb_id``; with ``create``, make one (atomically) if absent.

    Only global rank 0 should create it: it is the rank that talks to W&B, and one writer avoids a
    race between ranks started together by srun.
    """
    path = directory / WANDB_ID_FILE
    if path.is_file():
        return path.read_text().strip()
    if not create:
        return None
    run_id = secrets.token_hex(4)
    atomic_write_text(path, run_id + "\n")
    return run_id
