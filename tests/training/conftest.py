"""Fixtures for training tests: real digits shards written once per session by the project's writer."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from pipeline.data.sharding import write_shards
from pipeline.data.sources import get_source

REPO = Path(__file__).resolve().parents[2]
DEMO_CONFIG = REPO / "configs" / "demo.yaml"


@pytest.fixture(scope="session")
def digits(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The embedded digits dataset as webdataset shards + manifest."""
    root = tmp_path_factory.mktemp("digits")
    write_shards(get_source("digits", None), root)
    return root


def run_pipeline(
    *args: str, cwd: Path, env: dict[str, str] | None = None, timeout: float = 600
) -> subprocess.CompletedProcess:
    """``python -m pipeline.cli ARGS`` as a user would run it (W&B offline, no network)."""
    full_env = {**os.environ, "WANDB_MODE": "offline", "PYTHONWARNINGS": "ignore", **(env or {})}
    return subprocess.run([sys.executable, "-m", "pipeline.cli", *args], cwd=cwd, env=full_env,
                          capture_output=True, text=True, timeout=timeout)
