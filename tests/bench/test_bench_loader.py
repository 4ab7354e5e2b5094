"""The loader benchmark runs end to end on a tiny setting and writes its table, to files and to an offline W&B
run (the numbers are not checked)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from bench.bench_loader import TINY, run


@pytest.mark.slow
def test_loader_benchmark_runs_tiny(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BENCH_WANDB", "1")
    monkeypatch.setenv("WANDB_MODE", "offline")
    rows = run(TINY, tmp_path / "inputs", tmp_path / "results")
    printed = capsys.readouterr().out
    assert "| train full-side shards, 1 process |" in printed and "GPU section" in printed
    assert all(r.ours > 0 and r.peer > 0 for r in rows)
    (saved,) = (tmp_path / "results").glob("loader-*.json")
    loader_rows = 8 if importlib.util.find_spec("nvidia.dali") is not None else 7  # + DALI where installed
    assert len(json.loads(saved.read_text())["rows"]) == len(rows) == loader_rows + 2  # + Lightning, RSS
    (table,) = (tmp_path / "results" / "wandb").glob("offline-run-*/files/media/table/loader_*.table.json")
    logged = json.loads(table.read_text())
    assert logged["columns"][:5] == ["measurement", "ours", "peer", "peer value", "ratio"]
    assert [r[0] for r in logged["data"]] == [r.name for r in rows]  # the table, also in the W&B run
