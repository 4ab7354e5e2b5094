"""The demo end to end (2-process DDP per φ), and its offline W&B runs read back with W&B's own decoder."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.training.conftest import run_pipeline

PHIS = (0, 2)  # dWr is matched to the largest φ


def read_wandb_run(run_file: Path) -> dict[str, dict]:
    """Config, summary and history keys of an offline run, decoded by ``wandb leet inspect --json``."""
    command = [sys.executable, "-m", "wandb", "leet", "inspect", "--json", str(run_file)]
    out = subprocess.run(command, capture_output=True, text=True, check=True, timeout=120).stdout
    run: dict[str, dict] = {"config": {}, "summary": {}, "history": {}}
    for line in out.splitlines():
        record = json.loads(line)
        kind = record["type"]
        if kind in ("config", "summary"):
            run[kind].update(record[kind].get("update", {}))
        elif kind == "history":
            run["history"].update(record["history"]["item"])
    return run


@pytest.mark.slow
def test_demo_logs_each_phi_to_wandb_offline_and_prints_the_table(digits: Path, tmp_path: Path) -> None:
    demo = ("demo", "--out", str(tmp_path / "runs"), "--data", str(digits), "--phis", *map(str, PHIS),
            "--epochs", "1", "--", "--trainer.limit_train_batches", "2", "--trainer.limit_val_batches", "1",
            "--run.precise_bn_samples", "64")  # the demo's 512 would cost more than its two training steps
    done = run_pipeline(*demo, cwd=tmp_path)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    lines = done.stdout.splitlines()
    header = next(line.split() for line in lines if line.split()[:1] == ["run_name"])
    assert header[:10] == ["run_name", "strategy", "phi", "s", "resolution", "params", "flops", "acts", "val_top1",
                           "top1"]
    assert "## Growth of params and activations with flops" in done.stdout  # the report's tables
    assert "total wall time" in done.stdout and "wandb sync" in done.stdout

    flops = []
    for phi in PHIS:
        run_dir = tmp_path / "runs" / "demo" / f"compound-phi{phi}"
        result = json.loads((run_dir / "result.json").read_text())
        (run_file,) = run_dir.glob("wandb/offline-run-*/run-*.wandb")
        assert run_file.name == f"run-{result['wandb_run_id']}.wandb"
        run = read_wandb_run(run_file)
        for key in ("params", "flops", "acts"):
            assert run["config"][key] == result[key] > 0
            assert run["summary"][key] == result[key]
        assert run["config"]["phi"] == phi and run["config"]["strategy"] == "compound"
        assert run["config"]["dataset"] == digits.name and run["config"]["world_size"] == 2
        assert run["config"]["global_batch"] == 64 and run["config"]["recipe"]["opt"] == "adamw"
        assert run["config"]["resolution"] == result["resolution"]
        # the protocol: selected on val, reported on test, BN statistics recomputed before each evaluation
        assert (result["selected_on"], result["reported_on"], result["test_images"]) == ("val", "test", 180)
        assert result["precise_bn_samples"] > 0
        assert 0 <= run["summary"]["top1"] <= 1 and run["summary"]["top1"] == pytest.approx(result["top1"])
        for key in ("val/top1", "val/top1_ema", "train/loss_epoch", "perf/images_per_s", "train/skipped"):
            assert key in run["history"], key
        flops.append(result["flops"])
    assert flops[1] > flops[0]  # φ = 2 costs more than φ = 0
    # dWr trained at the flops φ = 2 measured (within the planner's bisection on s)
    (matched,) = (json.loads(p.read_text()) for p in (tmp_path / "runs" / "demo").glob("dWr-s*/result.json"))
    assert matched["strategy"] == "dWr" and abs(matched["flops"] / flops[1] - 1) < 0.05

    # the same demo again reuses the finished runs instead of training again
    again = run_pipeline(*demo, cwd=tmp_path, timeout=300)
    assert again.returncode == 0 and again.stdout.count("already done") == 3 and ": training" not in again.stdout
    # other settings for the same run directories are refused in one line, before anything trains
    other = run_pipeline("demo", "--out", str(tmp_path / "runs"), "--data", str(digits), "--phis", "0", cwd=tmp_path,
                         timeout=300)
    assert other.returncode == 2 and "already holds run compound-phi0 with another config" in other.stderr
