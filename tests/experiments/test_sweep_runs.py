"""Real sweeps on the digits shards: `pipeline sweep` killed mid-run and re-run trains only the missing runs;
`pipeline report` on the result writes md, html and PNGs and a W&B report run, read back with W&B's own tools."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.training.test_demo_wandb import read_wandb_run

REPO = Path(__file__).resolve().parents[2]
CONFIG = str(REPO / "configs" / "experiment" / "digits.yaml")
TINY = ["--trainer.max_epochs", "1", "--trainer.limit_train_batches", "2", "--trainer.limit_val_batches", "2"]


def sweep_command(digits: Path, root: Path) -> list[str]:
    """A 3-run compound sweep with tiny settings (1 process, no loader workers)."""
    return [sys.executable, "-m", "pipeline.cli", "sweep", "scale", "--config", CONFIG, "--name", "k", "--phi", "0..2",
            "--", "--data.root", str(digits), "--run.root", str(root), *TINY]


def read_events(run_file: Path) -> list[dict]:
    """Every record of an offline W&B run, decoded by ``wandb leet inspect --json``."""
    command = [sys.executable, "-m", "wandb", "leet", "inspect", "--json", str(run_file)]
    out = subprocess.run(command, capture_output=True, text=True, check=True, timeout=120).stdout
    return [json.loads(line) for line in out.splitlines()]


@pytest.mark.slow
def test_killed_sweep_reruns_only_the_missing_runs_then_reports(digits: Path, tmp_path: Path) -> None:
    env = {**os.environ, "WANDB_MODE": "offline", "PYTHONWARNINGS": "ignore"}
    root = tmp_path / "runs"
    first = root / "k" / "compound-phi0" / "result.json"
    proc = subprocess.Popen(sweep_command(digits, root), cwd=tmp_path, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)
    deadline = time.monotonic() + 400
    while not first.is_file() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.5)
    os.killpg(proc.pid, signal.SIGKILL)  # the sweep and its running `pipeline fit`, as a node loss would
    killed_output = proc.communicate()[0]
    assert first.is_file(), killed_output[-2000:]
    done_before = first.read_bytes()
    assert not (root / "k" / "compound-phi2" / "result.json").exists()

    again = subprocess.run(sweep_command(digits, root), cwd=tmp_path, env=env, capture_output=True, text=True,
                           timeout=900)
    assert again.returncode == 0, again.stdout[-2000:] + again.stderr[-2000:]
    assert "[1/3] compound-phi0: already done" in again.stdout
    trained = [line for line in again.stdout.splitlines() if ": training" in line or ": resuming" in line]
    assert [line.split()[1] for line in trained] == ["compound-phi1:", "compound-phi2:"]
    assert first.read_bytes() == done_before  # the finished run was not trained again
    records = [json.loads((root / "k" / f"compound-phi{i}" / "result.json").read_text()) for i in range(3)]
    assert [r["phi"] for r in records] == [0, 1, 2] and records[0]["flops"] < records[1]["flops"] < records[2]["flops"]

    # each run's W&B: best top-1 as a max summary, tags, the full resolved config
    (run_file,) = (root / "k" / "compound-phi1").glob("wandb/offline-run-*/run-*.wandb")
    events = read_events(run_file)
    maxed = {e["metric"]["name"] for e in events
             if e["type"] == "metric" and e["metric"].get("summary") == {"max": True}}
    assert maxed == {"val/top1", "val/top5", "val/top1_ema", "val/top5_ema"}
    tags = [e["run"].get("tags") for e in events if e["type"] == "run" and e["run"].get("tags")][-1]
    assert tags == ["compound", "phi=1", f"dataset={digits.name}", "sweep=k"]
    run = read_wandb_run(run_file)
    assert run["config"]["cli"]["model"]["phi"] == 1 and run["config"]["cli"]["trainer"]["max_epochs"] == 1
    assert run["summary"]["top1"] == pytest.approx(records[1]["top1"])

    report = subprocess.run([sys.executable, "-m", "pipeline.cli", "report", str(root / "k")], cwd=tmp_path, env=env,
                            capture_output=True, text=True, timeout=300)
    assert report.returncode == 0, report.stderr[-2000:]
    out = root / "k" / "report"
    md, html = (out / "report.md").read_text(), (out / "report.html").read_text()
    for r in records:
        half = 100 * 1.959964 * (r["top1"] * (1 - r["top1"]) / 180) ** 0.5
        assert f"| {100 * r['top1']:.1f} ± {half:.1f} |" in md and f"{100 * r['top1']:.1f} ± {half:.1f}" in html
    assert md.count("![") == 2 and html.count("data:image/png;base64,") == 2
    assert "| compound | 3 |" in md  # the growth exponents fitted over the 3 runs
    # the report's W&B run in the sweep's group: a table with a row per run and the plots as images
    (report_file,) = out.glob("wandb-runs/k/wandb/offline-run-*/run-*.wandb")
    events = read_events(report_file)
    header = next(e["run"] for e in events if e["type"] == "run")
    assert header["run_group"] == "k" and header["job_type"] == "report"
    logged = {k: v for e in events if e["type"] == "history" for k, v in e["history"]["item"].items()}
    assert logged["sweep/runs._type"] == "table-file" and logged["sweep/runs.nrows"] == 3
    assert {k for k, v in logged.items() if v == "image-file"} == {"report/accuracy._type", "report/runtime._type"}
    (table_file,) = report_file.parent.glob("files/media/table/sweep/runs_*.table.json")
    table = json.loads(table_file.read_text())
    column = table["columns"].index("top1")
    assert [(row[0], row[column]) for row in table["data"]] == [(r["run_name"], r["top1"]) for r in records]
