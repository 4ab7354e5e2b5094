"""The loader benchmark runs end to end on a tiny setting and writes its table, to files and to an offline W&B
run (the numbers are not checked)."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
# in a child process, as `python -m bench` runs: wandb.init would leave its service (and the variables naming
# it) in the pytest process, where later tests' training subprocesses would attach to it
CHILD = "import sys; from pathlib import Path; from bench.bench_loader import TINY, run; " \
        "run(TINY, Path(sys.argv[1]), Path(sys.argv[2]))"


@pytest.mark.slow
def test_loader_benchmark_runs_tiny(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("WANDB_")}
    proc = subprocess.run([sys.executable, "-c", CHILD, str(tmp_path / "inputs"), str(tmp_path / "results")],
                          capture_output=True, text=True, cwd=REPO, timeout=600,
                          env={**env, "BENCH_WANDB": "1", "WANDB_MODE": "offline", "PYTHONPATH": str(REPO)})
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "| train full-side shards, 1 process |" in proc.stdout and "GPU section" in proc.stdout
    assert "| train v0 32-side shards, 2 workers | " in proc.stdout and "Equalize " in proc.stdout  # + per-op ms
    (saved,) = (tmp_path / "results").glob("loader-*.json")
    rows = json.loads(saved.read_text())["rows"]
    assert all(r["ours"] > 0 and r["peer"] > 0 for r in rows)
    loader_rows = 11 if importlib.util.find_spec("nvidia.dali") is not None else 10  # + DALI where installed
    assert len(rows) == loader_rows + 2  # + Lightning, RSS
    (table,) = (tmp_path / "results" / "wandb").glob("offline-run-*/files/media/table/loader_*.table.json")
    logged = json.loads(table.read_text())
    assert logged["columns"][:5] == ["measurement", "ours", "peer", "peer value", "ratio"]
    assert [r[0] for r in logged["data"]] == [r["name"] for r in rows]  # the table, also in the W&B run
