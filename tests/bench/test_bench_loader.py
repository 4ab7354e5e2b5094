"""The loader benchmark runs end to end on a tiny setting and writes its table (the numbers are not checked)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from bench.bench_loader import TINY, run


@pytest.mark.slow
def test_loader_benchmark_runs_tiny(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rows = run(TINY, tmp_path / "inputs", tmp_path / "results")
    printed = capsys.readouterr().out
    assert "| train full-side shards, 1 process |" in printed and "GPU section" in printed
    assert all(r.ours > 0 and r.peer > 0 for r in rows)
    (saved,) = (tmp_path / "results").glob("loader-*.json")
    loader_rows = 8 if importlib.util.find_spec("nvidia.dali") is not None else 7  # + DALI where installed
    assert len(json.loads(saved.read_text())["rows"]) == len(rows) == loader_rows + 2  # + Lightning, RSS
