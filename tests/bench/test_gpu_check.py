"""``make gpu-check``: without CUDA one line and exit 0; the table and the exit status from real claims."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import torch

from bench.gpu_check import NO_CUDA, Claim, exit_status, table

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA: make gpu-check runs the claims")
def test_make_gpu_check_without_cuda_says_so_in_one_line_and_exits_0() -> None:
    proc = subprocess.run(["make", "-s", "gpu-check"], cwd=REPO, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.splitlines() == [NO_CUDA]


def test_table_marks_each_claim_and_counts_failures() -> None:
    claims = [Claim("fit, compile off", "top-1 93.1%", "≥ 50%", True),
              Claim("our B0 vs timm's", "812 vs 1000 images/s (0.81×)", "≥ 0.9×", False)]
    lines = table(claims).splitlines()
    assert lines[2] == "| fit, compile off | top-1 93.1% | ≥ 50% | pass |"
    assert lines[3] == "| our B0 vs timm's | 812 vs 1000 images/s (0.81×) | ≥ 0.9× | FAIL |"
    assert lines[-1] == "1 of 2 claims pass; 1 FAIL"
    assert table(claims[:1]).splitlines()[-1] == "1 of 1 claims pass"


def test_exit_status_fails_on_any_failed_claim_or_none() -> None:
    ok, bad = Claim("a", "1", "1", True), Claim("b", "0", "1", False)
    assert exit_status([ok, ok]) == 0
    assert exit_status([ok, bad]) == 1
    assert exit_status([]) == 1
