"""Suite-wide settings: one intra-op thread per process.

The machines this suite runs on have 2 cores, and most slow tests run 2 processes (DDP ranks,
SLURM tasks): torch's default of one thread per core per process oversubscribes them several times.
Subprocesses inherit OMP_NUM_THREADS.
"""

from __future__ import annotations

import os

os.environ["OMP_NUM_THREADS"] = "1"


def pytest_configure() -> None:
    """Apply the thread limit in this process too (torch may already be imported by a plugin)."""
    import torch

    torch.set_num_threads(1)
