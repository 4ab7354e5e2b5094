"""Run directories: ``<root>/<sweep or "single">/<run name>/``, the W&B run id kept inside them, and the
check that one directory never holds two different runs."""

from __future__ import annotations

import math
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from pipeline.atomic import atomic_write_text
from pipeline.errors import PipelineError
from pipeline.scaling import ScaleSpec
from pipeline.training.result import RESULT_FILE

SINGLE = "single"
WANDB_ID_FILE = "wandb_id"
CHECKPOINT_DIR = "checkpoints"
LAST, BEST = "last", "best"  # checkpoint names: resume from last.ckpt; best.ckpt holds the weights a run reports


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
        precise_bn_samples: training images (all ranks together) on which every BatchNorm's statistics are
            recomputed before each validation and test (pycls's precise BN, which uses 8192); 0 = off.
        checkpoint_every_min: also write ``last.ckpt`` every this many minutes of training, mid-epoch too (exact
            resume as at an epoch end), so a crash loses at most that much; 0 = only at epoch ends.
    """

    root: str = "runs"
    sweep: str | None = None
    name: str | None = None
    dataset: str | None = None
    source_run: str | None = None
    project: str = "compound-scaling"
    monitor: str = "val/top1"
    precise_bn_samples: int = 0
    checkpoint_every_min: float = 30.0

    def __post_init__(self) -> None:
        if not math.isfinite(self.checkpoint_every_min) or self.checkpoint_every_min < 0:
            raise PipelineError(f"run.checkpoint_every_min must be ≥ 0 minutes (0 = only at epoch ends), "
                                f"got {self.checkpoint_every_min}")
        if self.precise_bn_samples < 0:
            raise PipelineError(f"run.precise_bn_samples must be ≥ 0 (0 = off), got {self.precise_bn_samples}")


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


CONFIG_FILE = "config.yaml"
# Keys that never change what a run computes: where its directory is (the directory itself is the identity),
# how it is started (the checkpoint to resume) and what is printed.
IGNORED_KEYS = frozenset({
    "run.root", "run.sweep", "run.name", "trainer.default_root_dir", "ckpt_path", "weights_only",
    "trainer.enable_progress_bar", "trainer.enable_model_summary", "trainer.log_every_n_steps",
    "run.checkpoint_every_min",
})
# Keys a resume (--ckpt_path) may raise: training goes on longer, the steps already done are the same.
EXTENDABLE_KEYS = ("trainer.max_epochs", "trainer.max_steps")
SHOWN_DIFFERENCES = 3


def flatten(config: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}}`` → ``{"a.b": 1}`` (lists and other leaves are kept as they are)."""
    flat: dict[str, Any] = {}
    for key, value in config.items():
        if isinstance(value, dict) and value:
            flat.update(flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def _same(old: Any, new: Any) -> bool:
    """Equal as config values: ``2``, ``"2"`` and ``2.0`` are the same (a key from YAML vs the command line)."""
    if old == new or str(old) == str(new):
        return True
    try:
        return float(old) == float(new)
    except (TypeError, ValueError):
        return False


def _bound(value: Any) -> float:
    """A max_epochs / max_steps value as a number; None and -1 are unbounded."""
    return float("inf") if value is None or int(value) == -1 else float(value)


def config_differences(old: dict[str, Any], new: dict[str, Any], resuming: bool) -> list[str]:
    """``key: old → new`` for every key of two resolved configs that could change the run's results.

    Resuming (``--ckpt_path``), the EXTENDABLE_KEYS may grow (never shrink). A key in only one of them (the
    code gained or lost a key between two attempts) is a difference, None on the missing side: which value
    the older code used is unknown.
    """
    old, new = flatten(old), flatten(new)
    diffs = []
    for key in sorted(old.keys() | new.keys()):
        if key in IGNORED_KEYS:
            continue
        before, after = old.get(key), new.get(key)
        if _same(before, after):
            continue
        if resuming and key in EXTENDABLE_KEYS and _bound(after) >= _bound(before):
            continue
        diffs.append(f"{key}: {before!r} → {after!r}")
    return diffs


def check_run_dir(directory: Path, config: dict[str, Any], ckpt_path: str | None) -> None:
    """Refuse a fit that would mix two different runs in ``directory`` or overwrite a run's checkpoints.

    ``config`` is the resolved config as ``config.yaml`` stores it. Refused (PipelineError) when the stored
    config differs from it in a key that changes results, or when ``directory`` already has checkpoints or a
    result and no ``ckpt_path`` says to resume.
    """
    ways_out = ("give this run its own --run.name or --run.sweep, or resume the stored run unchanged with "
                "--ckpt_path last")
    stored = directory / CONFIG_FILE
    if stored.is_file():
        diffs = config_differences(yaml.safe_load(stored.read_text()) or {}, config, resuming=ckpt_path is not None)
        if diffs:
            more = f" (and {len(diffs) - SHOWN_DIFFERENCES} more)" if len(diffs) > SHOWN_DIFFERENCES else ""
            raise PipelineError(f"{directory} holds a run with another config ({'; '.join(diffs[:SHOWN_DIFFERENCES])}"
                                f"{more}); {ways_out}")
    done = [p.name for p in (directory / RESULT_FILE, *sorted((directory / CHECKPOINT_DIR).glob("*.ckpt")))
            if p.is_file()]
    if done and ckpt_path is None:
        raise PipelineError(f"{directory} already holds a run ({', '.join(done)}) that this fit would overwrite; "
                            f"{ways_out}")
