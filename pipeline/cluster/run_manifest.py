"""Run manifests: the list of runs a job array trains, one array task per entry (not a dataset's shard manifest,
:mod:`pipeline.data.shard_manifest`).

A manifest is JSON: ``{"runs": [{"config": …, "overrides": […], "run_dir": …}, …]}``. Relative paths
are relative to the directory ``sbatch`` is called from (the job's working directory). A run is
finished when ``<run_dir>/result.json`` exists (the training CLI writes it last), so re-submitting a
manifest trains only the rest.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

from pipeline.atomic import atomic_write_json
from pipeline.errors import PipelineError
from pipeline.training.result import RESULT_FILE

RUN_MANIFEST_FILE = "run_manifest.json"  # a sweep directory's run manifest
LEGACY_RUN_MANIFEST_FILE = "manifest.json"  # its name until 2026-12: sweep directories made then resume


def run_manifest_path(directory: str | Path) -> Path:
    """The run manifest of sweep ``directory``: the legacy ``manifest.json`` where only that exists, else
    ``run_manifest.json`` (kept in place, so an old sweep directory never holds two manifests)."""
    directory = Path(directory)
    legacy = directory / LEGACY_RUN_MANIFEST_FILE
    current = directory / RUN_MANIFEST_FILE
    return legacy if legacy.is_file() and not current.is_file() else current


@dataclass(frozen=True)
class RunEntry:
    """One run: a training config, its command-line overrides, and the directory it must train in."""

    config: str
    run_dir: str
    overrides: list[str] = field(default_factory=list)

    def finished(self) -> bool:
        """Whether the run wrote its result record."""
        return (Path(self.run_dir) / RESULT_FILE).is_file()


def write_manifest(path: str | Path, runs: list[RunEntry]) -> Path:
    """Write ``runs`` to ``path`` atomically."""
    return atomic_write_json(path, {"runs": [asdict(run) for run in runs]})


def read_manifest(path: str | Path) -> list[RunEntry]:
    """Read and validate a manifest; PipelineError with the entry at fault otherwise."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise PipelineError(f"run manifest {path} not found") from None
    except json.JSONDecodeError as err:
        raise PipelineError(f"run manifest {path} is not JSON: {err}") from None
    entries = data.get("runs") if isinstance(data, dict) else None
    if not isinstance(entries, list) or not entries:
        raise PipelineError(f'run manifest {path} needs a non-empty "runs" list')
    runs = []
    for i, entry in enumerate(entries):
        keys = set(entry) if isinstance(entry, dict) else set()
        if not {"config", "run_dir"} <= keys <= {"config", "run_dir", "overrides"}:
            raise PipelineError(f"run manifest {path}, entry {i}: needs keys config and run_dir (and optionally "
                                f"overrides), got {sorted(keys) or entry!r}")
        run = RunEntry(**entry)
        if not (isinstance(run.config, str) and isinstance(run.run_dir, str) and isinstance(run.overrides, list)
                and all(isinstance(o, str) for o in run.overrides)):
            raise PipelineError(f"run manifest {path}, entry {i}: config and run_dir must be strings, "
                                "overrides a list of strings")
        runs.append(run)
    dirs = [Path(run.run_dir).resolve() for run in runs]
    if len(set(dirs)) != len(dirs):
        raise PipelineError(f"run manifest {path}: two entries share a run_dir; each run needs its own")
    return runs


def pending(runs: list[RunEntry]) -> list[int]:
    """Indices of the runs without a result record."""
    return [i for i, run in enumerate(runs) if not run.finished()]


def index_ranges(indices: list[int]) -> str:
    """``[0, 1, 2, 5, 7, 8]`` → ``"0-2,5,7-8"`` (sbatch ``--array`` syntax)."""
    spans: list[list[int]] = []
    for i in sorted(set(indices)):
        if spans and spans[-1][1] == i - 1:
            spans[-1][1] = i
        else:
            spans.append([i, i])
    return ",".join(str(a) if a == b else f"{a}-{b}" for a, b in spans)
