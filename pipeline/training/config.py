"""A training config resolved exactly as ``pipeline fit`` would resolve it, without running anything: for the
launcher's and ``pipeline submit``'s checks and for planning sweeps."""

from __future__ import annotations

import contextlib
import io
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from pipeline.errors import PipelineError
from pipeline.scaling import ScaleSpec
from pipeline.scaling.spec import SPEC_KEYS, resolve_spec
from pipeline.training.rundir import RunOptions, run_dir


@dataclass(frozen=True)
class ResolvedRun:
    """A training config as the training CLI resolves it, with its scaling spec and run directory."""

    config: dict[str, Any]
    spec: ScaleSpec
    run_dir: Path


def parse_config(config: str, overrides: list[str]) -> dict[str, Any]:
    """The fully resolved config of ``pipeline fit --config <config> <overrides>``; nothing is instantiated.

    Runs the training CLI in-process with ``--print_config`` (parse and validate, then exit), so the
    check is exactly what ``pipeline fit`` would accept.
    """
    from pipeline.training.cli import run_cli  # the training stack: imported only when a config is resolved

    if not Path(config).is_file():
        raise PipelineError(f"config {config} not found (relative paths are from {Path.cwd()})")
    printed = io.StringIO()
    try:
        with contextlib.redirect_stdout(printed), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            run_cli(["fit", "--config", config, *overrides, "--print_config"])
    except SystemExit as done:
        if done.code not in (0, None):
            raise PipelineError(f"pipeline fit rejected {config} (exit status {done.code})") from None
    except PipelineError as err:
        raise PipelineError(f"{config}: {err}") from None
    return yaml.safe_load(printed.getvalue())


def resolve_run(config: str, overrides: list[str]) -> ResolvedRun:
    """Parse the config, resolve its scaling spec and its run directory (PipelineError for either)."""
    resolved = parse_config(config, overrides)
    try:
        spec = resolve_spec(**{k: v for k, v in resolved["model"].items() if k in SPEC_KEYS})
        directory = run_dir(RunOptions(**resolved["run"]), spec)
    except PipelineError as err:
        raise PipelineError(f"{config}: {err}") from None
    return ResolvedRun(resolved, spec, directory)
