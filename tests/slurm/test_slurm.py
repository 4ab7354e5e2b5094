"""SLURM scripts against a real two-node cluster (see conftest.py)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.slurm, pytest.mark.slow]
HERE = Path(__file__).parent


def test_two_node_gloo_all_reduce(slurm_cluster, tmp_path: Path) -> None:
    """2 nodes × 1 task: both ranks meet at Lightning's SLURM address/port and sum their ranks."""
    job = slurm_cluster.sbatch("-N2", "--ntasks-per-node=1", "--cpus-per-task=1", "-o", "out-%j.log",
                               "--wrap", f"srun {sys.executable} {HERE / 'allreduce.py'}", cwd=tmp_path)
    info = slurm_cluster.wait(job, timeout=120)
    log = (tmp_path / f"out-{job}.log").read_text()
    assert info["JobState"] == "COMPLETED", log
    assert sorted(line.split(":")[0] for line in log.splitlines() if line.startswith("rank")) == [
        "rank 0/2 on n1", "rank 1/2 on n2"]
    assert log.count("sum=3") == 2, log
