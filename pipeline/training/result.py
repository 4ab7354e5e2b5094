"""The run record: one ``result.json`` per finished run, written last and atomically (its presence = done).

A run writes its own record here; sweeps and reports only read records (``read_result``, ``read_results``).

Selection and report: ``top1`` / ``top5`` / ``top1_ema`` / ``top5_ema`` are the accuracies of the selected
checkpoint (best.ckpt by ``run.monitor`` on the split ``selected_on``) evaluated once on the split ``reported_on``
(``test_images`` images); ``val_top1`` … are the best accuracies seen on ``selected_on`` (``val_images`` images).
A fit that never validated selected nothing: ``selected_on`` is None and its final weights are reported."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

from pipeline.atomic import atomic_write_json
from pipeline.errors import PipelineError

RESULT_FILE = "result.json"

# design.md's record; ``phi`` / ``s`` and the transfer fields are None where they do not apply.
RESULT_KEYS = (
    "run_name", "sweep", "strategy", "phi", "s", "alpha", "beta", "gamma", "fast_alpha", "d", "w", "r",
    "resolution", "dataset", "source_run", "params", "flops", "acts", "top1", "top5", "top1_ema", "top5_ema",
    "images_per_s", "epoch_time_s", "wall_time_s", "gpu_hours", "world_size", "wandb_run_id", "git_commit",
    "val_top1", "val_top5", "val_top1_ema", "val_top5_ema", "selected_on", "reported_on", "val_images", "test_images",
)
ACCURACIES = ("top1", "top5", "top1_ema", "top5_ema")


def reported(metrics: dict[str, float]) -> dict[str, float | None]:
    """The record's reported accuracies (``top1`` …) from a test's ``test/top1`` … metrics (None for an accuracy
    the run does not log: the EMA's without an EMA)."""
    return {key: (float(metrics[f"test/{key}"]) if f"test/{key}" in metrics else None) for key in ACCURACIES}


def git_commit(path: str | Path = ".") -> str | None:
    """The commit checked out at ``path`` (with ``-dirty`` if the tree has changes), or None outside git."""
    try:
        head = subprocess.run(["git", "-C", str(path), "rev-parse", "HEAD"], capture_output=True, text=True,
                              check=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(path), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, check=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return f"{head}-dirty" if dirty else head


def write_result(run_dir: str | Path, record: dict[str, Any]) -> Path:
    """Write ``record`` atomically as ``run_dir/result.json``; every key of RESULT_KEYS must be present."""
    missing = [k for k in RESULT_KEYS if k not in record]
    if missing:
        raise PipelineError(f"result record lacks {', '.join(missing)}")
    return atomic_write_json(Path(run_dir) / RESULT_FILE, record)


def read_result(run_dir: str | Path) -> dict[str, Any] | None:
    """The record of the run in ``run_dir``, or None if the run has not finished."""
    path = Path(run_dir) / RESULT_FILE
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise PipelineError(f"{path} is not valid JSON ({err}); delete it to re-run that run") from err


def read_results(root: str | Path) -> list[dict[str, Any]]:
    """Every record under ``root`` (any depth), sorted by sweep and run name."""
    records = [read_result(p.parent) for p in Path(root).rglob(RESULT_FILE)]
    return sorted((r for r in records if r), key=lambda r: (str(r.get("sweep")), str(r.get("run_name"))))
