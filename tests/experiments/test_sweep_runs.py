"""Real sweeps on the digits shards: `pipeline sweep` killed mid-run and re-run trains only the missing runs;
`pipeline report` on the result writes md, html and PNGs and a W&B report run, read back with W&B's own tools."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from scipy import stats

from tests.training.test_demo_wandb import read_wandb_run
from tests.training.test_finetune import ONE_PROCESS, TINY_SCHEDULE
from tests.training.transfer_data import write_digits_as_cifar100

REPO = Path(__file__).resolve().parents[2]
CONFIG = str(REPO / "configs" / "experiment" / "digits.yaml")
# precise BN on 256 train images, not the config's 8,192 (all 1,437 here): before the val and the test of each run it
# passes its images through the network and its EMA, three fifths of a φ = 2 run of 2 batches (35 s → 14 s)
TINY = ["--trainer.max_epochs", "1", "--trainer.limit_train_batches", "2", "--trainer.limit_val_batches", "2",
        "--run.precise_bn_samples", "256"]


def sweep_command(digits: Path, root: Path) -> list[str]:
    """A 3-run compound sweep with tiny settings (1 process, no loader workers)."""
    return [sys.executable, "-m", "pipeline.cli", "sweep", "scale", "--config", CONFIG, "--name", "k", "--phi", "0..2",
            "--", "--data.root", str(digits), "--run.root", str(root), *TINY]


def read_events(run_file: Path) -> list[dict]:
    """Every record of an offline W&B run, decoded by ``wandb leet inspect --json``."""
    command = [sys.executable, "-m", "wandb", "leet", "inspect", "--json", str(run_file)]
    out = subprocess.run(command, capture_output=True, text=True, check=True, timeout=120).stdout
    return [json.loads(line) for line in out.splitlines()]


ENV = {**os.environ, "WANDB_MODE": "offline", "PYTHONWARNINGS": "ignore"}


def kill_when(command: list[str], cwd: Path, ready: Path) -> str:
    """Start ``command`` in its own session, SIGKILL all of it (as a node loss would) once ``ready`` exists;
    return what it printed."""
    proc = subprocess.Popen(command, cwd=cwd, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    deadline = time.monotonic() + 400
    while not ready.is_file() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.5)
    with contextlib.suppress(ProcessLookupError):  # all of it may have exited (a failure: shown below)
        os.killpg(proc.pid, signal.SIGKILL)
    output = proc.communicate()[0]
    assert ready.is_file(), output[-2000:]
    return output


@pytest.fixture(scope="module")
def rerun(digits: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, bytes, str]:
    """The 3-run sweep killed once its first run finished, then run again: (runs root, the first run's
    result.json before the re-run, the re-run's output)."""
    tmp_path = tmp_path_factory.mktemp("sweep")
    root = tmp_path / "runs"
    first = root / "k" / "compound-phi0" / "result.json"
    kill_when(sweep_command(digits, root), tmp_path, first)  # the sweep and its running `pipeline fit`
    done_before = first.read_bytes()
    assert not (root / "k" / "compound-phi2" / "result.json").exists()
    again = subprocess.run(sweep_command(digits, root), cwd=tmp_path, env=ENV, capture_output=True, text=True,
                           timeout=900)
    assert again.returncode == 0, again.stdout[-2000:] + again.stderr[-2000:]
    return root, done_before, again.stdout


@pytest.mark.slow
def test_killed_sweep_reruns_only_the_missing_runs_then_reports(rerun: tuple[Path, bytes, str], digits: Path) -> None:
    root, done_before, stdout = rerun
    first = root / "k" / "compound-phi0" / "result.json"
    assert "[1/3] compound-phi0: already done" in stdout
    trained = [line for line in stdout.splitlines() if ": training" in line or ": resuming" in line]
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

    report = subprocess.run([sys.executable, "-m", "pipeline.cli", "report", str(root / "k")], cwd=root.parent, env=ENV,
                            capture_output=True, text=True, timeout=300)
    assert report.returncode == 0, report.stderr[-2000:]
    out = root / "k" / "report"
    md, html = (out / "report.md").read_text(), (out / "report.html").read_text()
    for r in records:
        ci = stats.binomtest(round(180 * r["top1"]), 180).proportion_ci(method="wilson")  # 95 % Wilson
        cell = f"{100 * r['top1']:.1f} [{100 * ci.low:.1f}, {100 * ci.high:.1f}]"
        assert f"| {cell} |" in md and cell in html
    assert md.count("![") == 3 and html.count("data:image/png;base64,") == 3  # accuracy, fits, runtime
    assert "| compound | 3 |" in md  # the growth exponents fitted over the 3 runs
    # the report's W&B run in the sweep's group: a table with a row per run and the plots as images
    (report_file,) = out.glob("wandb-runs/k/wandb/offline-run-*/run-*.wandb")
    events = read_events(report_file)
    header = next(e["run"] for e in events if e["type"] == "run")
    assert header["run_group"] == "k" and header["job_type"] == "report"
    logged = {k: v for e in events if e["type"] == "history" for k, v in e["history"]["item"].items()}
    assert logged["sweep/runs._type"] == "table-file" and logged["sweep/runs.nrows"] == 3
    assert {k for k, v in logged.items() if v == "image-file"} == {"report/accuracy._type", "report/runtime._type",
                                                                     "report/fits._type"}
    assert logged["sweep/fits._type"] == "table-file" and logged["sweep/fits.nrows"] == 2  # over flops, epoch time
    (table_file,) = report_file.parent.glob("files/media/table/sweep/runs_*.table.json")
    table = json.loads(table_file.read_text())
    column = table["columns"].index("top1")
    assert [(row[0], row[column]) for row in table["data"]] == [(r["run_name"], r["top1"]) for r in records]


@pytest.mark.slow
def test_transfer_sweep_fine_tunes_each_point_resumes_and_reports(rerun: tuple[Path, bytes, str], tmp_path: Path
                                                                   ) -> None:
    """``pipeline sweep transfer --from`` the finished φ = 0..2 sweep onto digits written as CIFAR-100 pickles:
    killed mid-run, the re-run resumes that run from last.ckpt (its stored config keeps model.init_from), a
    third run trains nothing, and the report puts transfer top-1 beside each source's top-1."""
    root = rerun[0]
    write_digits_as_cifar100(tmp_path / "src")
    shards = subprocess.run([sys.executable, "-m", "pipeline.cli", "shards", "cifar100", "--src", str(tmp_path / "src"),
                             "--out", str(tmp_path / "c100"), "--holdout", "180"],
                            cwd=tmp_path, env=ENV, capture_output=True, text=True)
    assert shards.returncode == 0, shards.stderr[-2000:]
    command = [sys.executable, "-m", "pipeline.cli", "sweep", "transfer", "--from", str(root / "k"), "--dataset",
               "cifar100", "--config", str(REPO / "configs" / "transfer" / "cifar100.yaml"), "--data-root",
               str(tmp_path / "c100"), "--", "--run.root", str(root), *ONE_PROCESS, *TINY_SCHEDULE]
    sweep_dir = root / "transfer-cifar100-k"
    names = [f"compound-phi{i}-cifar100" for i in range(3)]
    # killed once the first fine-tune saved its first epoch (last.ckpt), before it finished
    kill_when(command, tmp_path, sweep_dir / names[0] / "checkpoints" / "last.ckpt")
    assert not (sweep_dir / names[0] / "result.json").exists()

    again = subprocess.run(command, cwd=tmp_path, env=ENV, capture_output=True, text=True, timeout=900)
    assert again.returncode == 0, again.stdout[-2000:] + again.stderr[-2000:]
    assert f"[1/3] {names[0]}: resuming from last.ckpt" in again.stdout
    log = (sweep_dir / "logs" / f"{names[0]}.log").read_text()
    assert "Restored all states from the checkpoint" in log
    sources = [json.loads((root / "k" / f"compound-phi{i}" / "result.json").read_text()) for i in range(3)]
    records = [json.loads((sweep_dir / name / "result.json").read_text()) for name in names]
    assert [(r["source_run"], r["dataset"], r["phi"]) for r in records] == [
        (f"compound-phi{i}", "cifar100", i) for i in range(3)]
    assert [r["resolution"] for r in records] == [s["resolution"] for s in sources] == [32, 36, 44]
    assert all(r["params"] > s["params"] for r, s in zip(records, sources, strict=True))  # a 100-class head
    # the resumed run too: 2 whole epochs of the 1,437 − 180 held out for selection (minival)
    assert all(r["global_step"] == 2 * ((1437 - 180) // 32) for r in records)
    assert all((r["selected_on"], r["reported_on"], r["test_images"]) == ("minival", "test", 360) for r in records)
    # chance: 10 % (measured 90 %, 86 %, 78 % from sources at 11 %, 13 %, 8 % after their 2 batches)
    assert all(r["top1"] > 0.5 for r in records), [r["top1"] for r in records]

    third = subprocess.run(command, cwd=tmp_path, env=ENV, capture_output=True, text=True, timeout=300)
    assert third.returncode == 0, third.stderr[-2000:]
    assert [f"[{i}/3] {n}: already done (result.json)" in third.stdout for i, n in enumerate(names, 1)] == [True] * 3

    report = subprocess.run([sys.executable, "-m", "pipeline.cli", "report", str(sweep_dir), "--no-wandb"],
                            cwd=tmp_path, env=ENV, capture_output=True, text=True, timeout=300)
    assert report.returncode == 0, report.stderr[-2000:]
    md = (sweep_dir / "report" / "report.md").read_text()
    transfer = md[md.index("## Transfer"):]
    rows = [line for line in transfer.splitlines() if line.startswith("| cifar100 |")]
    for row, r, s in zip(rows, records, sources, strict=True):
        ci = stats.binomtest(round(360 * r["top1"]), 360).proportion_ci(method="wilson")
        assert row == (f"| cifar100 | {s['run_name']} | {r['flops'] / 1e6:.1f} | {100 * r['top1']:.1f} "
                       f"[{100 * ci.low:.1f}, {100 * ci.high:.1f}] | {100 * s['top1']:.1f} |")
    assert (sweep_dir / "report" / "transfer.png").is_file() and "transfer.png" in transfer
    print(f"\n{transfer}")


@pytest.mark.slow
def test_grid_sweep_trains_each_network_once_and_ranks_by_measured_flops(digits: Path, tmp_path: Path) -> None:
    """``pipeline sweep grid`` at 32 px: the three directions that reach 2× the base's flops within 5 % train
    (one of them under three labels), then the ranking (grid.md, grid.json) shows φ′, measured flops and labels,
    those within the noise of the best first, fewest measured flops first."""
    root = tmp_path / "runs"
    command = [sys.executable, "-m", "pipeline.cli", "sweep", "grid", "--config", CONFIG, "--name", "g", "--",
               "--data.root", str(digits), "--run.root", str(root), *TINY, *ONE_PROCESS]
    done = subprocess.run(command, cwd=tmp_path, env=ENV, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    trained = [line.split()[1] for line in done.stdout.splitlines() if ": training" in line]
    assert trained == ["grid-a1.4-b1.2-g1:", "grid-a1.2-b1.3-g1:", "grid-a1-b1.4-g1:"]
    plan = json.loads((root / "g" / "sweep.json").read_text())
    assert len(plan["notes"]) == 16 - 3 - 2 and plan["runs"][0]["labels"] == [
        "grid-a1.4-b1.2-g1", "grid-a1.1-b1.2-g1.1", "grid-a1.2-b1.2-g1.1"]
    records = {r["run_name"]: json.loads((Path(r["run_dir"]) / "result.json").read_text()) for r in plan["runs"]}
    assert all(r["phi"] == p["phi"] and r["flops"] == p["flops"] for r, p in zip(records.values(), plan["runs"],
                                                                                   strict=True))
    ranking = json.loads((root / "g" / "grid.json").read_text())["ranking"]
    tied = [r for r in ranking if r["within_noise_of_best"]]
    assert ranking[:len(tied)] == tied and [r["flops"] for r in tied] == sorted(r["flops"] for r in tied)
    assert all(r["flops"] == records[r["run_name"]]["flops"] for r in ranking)
    table = (root / "g" / "grid.md").read_text()
    first = plan["runs"][0]
    assert (f"| {first['phi']:.4g} | 32 | {first['flops'] / 1e6:.2f} |" in table
            and "grid-a1.4-b1.2-g1, grid-a1.1-b1.2-g1.1, grid-a1.2-b1.2-g1.1 |" in table)
    print(f"\n{table}")


@pytest.mark.slow
def test_more_seeds_train_only_the_missing_seed_and_the_report_shows_mean_and_sd(rerun: tuple[Path, bytes, str],
                                                                                digits: Path) -> None:
    """``--seeds 2`` on the finished one-seed sweep: its plain compound-phi0 counts as seed 0, so only
    compound-phi0-seed1 trains (seed_everything and data.seed 1); the report shows the point's mean ± s.d."""
    root = rerun[0]
    command = [sys.executable, "-m", "pipeline.cli", "sweep", "scale", "--config", CONFIG, "--name", "k", "--phi", "0",
               "--seeds", "2", "--", "--data.root", str(digits), "--run.root", str(root), *TINY]
    done = subprocess.run(command, cwd=root.parent, env=ENV, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    trained = [line.split()[1] for line in done.stdout.splitlines() if ": training" in line]
    assert trained == ["compound-phi0-seed1:"] and "[1/4] compound-phi0: already done" in done.stdout
    config = yaml.safe_load((root / "k" / "compound-phi0-seed1" / "config.yaml").read_text())
    assert (config["seed_everything"], config["data"]["seed"]) == (1, 1)
    runs = [json.loads((root / "k" / name / "result.json").read_text()) for name in ("compound-phi0",
                                                                                    "compound-phi0-seed1")]
    report = subprocess.run([sys.executable, "-m", "pipeline.cli", "report", str(root / "k"), "--no-wandb", "--out",
                             str(root / "seeds-report")], cwd=root.parent, env=ENV, capture_output=True, text=True,
                            timeout=300)
    assert report.returncode == 0, report.stderr[-2000:]
    md = (root / "seeds-report" / "report.md").read_text()
    top1 = [r["top1"] for r in runs]
    mean, sd = 100 * sum(top1) / 2, 100 * abs(top1[0] - top1[1]) / 2**0.5
    assert f"| k | compound-phi0 | 2 | {mean:.1f} | {sd:.1f} |" in md
