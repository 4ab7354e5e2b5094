"""Suite-wide settings: one intra-op thread per process, and a suite that touches nothing of the clone or home.

The machines this suite runs on have 2 cores, and most slow tests run 2 processes (DDP ranks,
SLURM tasks): torch's default of one thread per core per process oversubscribes them several times.
Subprocesses inherit OMP_NUM_THREADS.

Hermetic: every test runs in its own temporary working directory (so a run root ``runs`` or a shard
directory ``data/…`` given relatively lands there), and the caches and settings of W&B, matplotlib,
torch, Hugging Face and anything following XDG point into one temporary directory per session (the
dependency virtualenv is the only thing read from the home directory). The session fails if the clone's
own ``runs/`` or ``data/`` changed while it ran.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
OWN = ("runs", "data")  # the clone's directories that `make demo` fills and no test may touch

os.environ["OMP_NUM_THREADS"] = "1"
_HOME = Path(tempfile.mkdtemp(prefix="pipeline-tests-home-"))
for _key, _sub in {"XDG_CACHE_HOME": "cache", "XDG_CONFIG_HOME": "config", "XDG_DATA_HOME": "share",
                   "WANDB_CACHE_DIR": "cache/wandb", "WANDB_CONFIG_DIR": "config/wandb",
                   "WANDB_DATA_DIR": "share/wandb", "MPLCONFIGDIR": "config/matplotlib",
                   "TORCH_HOME": "cache/torch", "HF_HOME": "cache/huggingface",
                   "TORCHINDUCTOR_CACHE_DIR": "cache/inductor", "TRITON_CACHE_DIR": "cache/triton"}.items():
    os.environ[_key] = str(_HOME / _sub)


def snapshot() -> dict[str, tuple[int, int]]:
    """(size, mtime in ns) of every file under the clone's ``runs/`` and ``data/``."""
    files = (p for d in OWN for p in (REPO / d).rglob("*") if p.is_file())
    return {str(p.relative_to(REPO)): (p.stat().st_size, p.stat().st_mtime_ns) for p in files}


def pytest_configure(config: pytest.Config) -> None:
    """Apply the thread limit in this process too (torch may already be imported by a plugin); note the
    clone's own run and data files."""
    import torch

    torch.set_num_threads(1)
    config.stash[_BEFORE] = snapshot()


_BEFORE = pytest.StashKey[dict]()


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Fail the session when any test read-modified the clone's runs/ or data/ (created, changed, deleted)."""
    before, after = session.config.stash[_BEFORE], snapshot()
    changed = sorted(k for k in before.keys() | after.keys() if before.get(k) != after.get(k))
    if changed:
        print(f"\nnot hermetic: the suite changed {len(changed)} file(s) of the clone, e.g. {changed[:3]}")
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


@pytest.fixture(autouse=True)
def _own_working_directory(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test runs in a fresh temporary directory: relative run roots and outputs land there."""
    monkeypatch.chdir(tmp_path_factory.mktemp("cwd"))
