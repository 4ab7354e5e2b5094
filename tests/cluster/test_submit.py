"""``pipeline submit``: every check runs before sbatch; --dry-run shows the command that would be submitted.

None of these needs SLURM installed: --dry-run only prints, and the one test of a real submit checks
that a host without SLURM's client commands is refused (PATH holds none of them).
"""

from __future__ import annotations

import json
import shlex
from pathlib import Path

import pytest

from pipeline import cli
from pipeline.cluster.run_manifest import RunEntry, write_manifest

REPO = Path(__file__).resolve().parents[2]
DEMO = str(REPO / "configs" / "demo.yaml")


def submit(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = cli.main(["submit", *args])
    out, err = capsys.readouterr()
    return code, out, err


def no_slurm(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """A host without SLURM's client commands, whatever this machine has installed."""
    monkeypatch.setenv("PATH", str(tmp_path / "empty-bin"))


def test_dry_run_prints_the_checked_command(shards: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.chdir(tmp_path)
    no_slurm(monkeypatch, tmp_path)  # requeue is on, but --dry-run only prints: no scontrol needed
    (tmp_path / "env.sh").write_text("module load cuda\n")
    code, out, _ = submit(capsys, "--config", DEMO, "--nodes", "2", "--gpus-per-node", "4", "--cpus-per-task", "8",
                          "--signal", "USR2", "--time", "1:00:00", "--setup", "env.sh", "--dry-run",
                          "--", "--data.root", str(shards))
    assert code == 0
    words = shlex.split(out)
    assert "CLUSTER_REQUEUE_SIGNAL=USR2" in words and "CLUSTER_REQUEUE=1" in words
    assert f"CLUSTER_SETUP={tmp_path / 'env.sh'}" in words  # absolute: the job runs from its own directory
    for opt in ("--nodes=2", "--ntasks-per-node=4", "--gpus-per-node=4", "--cpus-per-task=8", "--signal=USR2@120",
                "--requeue", "--time=1:00:00", "--job-name=compound-phi0", str(REPO / "slurm" / "train.sbatch")):
        assert opt in words, out
    assert words[-3:] == [DEMO, "--data.root", str(shards)]


@pytest.mark.parametrize(("workers", "cpus"), [("0", "1"), ("3", "4")])
def test_cpus_per_task_default_from_loader_workers(shards: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                   capsys: pytest.CaptureFixture[str], workers: str, cpus: str) -> None:
    monkeypatch.chdir(tmp_path)
    code, out, _ = submit(capsys, "--config", DEMO, "--no-requeue", "--dry-run",
                          "--", "--data.root", str(shards), "--data.num_workers", workers)
    assert code == 0 and f"--cpus-per-task={cpus}" in shlex.split(out), out
    assert list(tmp_path.iterdir()) == []  # --dry-run creates nothing


@pytest.mark.parametrize(("args", "message"), [
    (["--gpus-per-node", "2", "--ntasks-per-node", "1"], "--ntasks-per-node=1 but 2 GPUs per node"),
    (["--", "--trainer.devices", "3"], "--trainer.devices is set by the SLURM launcher"),
    (["--", "--model.phi", "one"], 'demo.yaml: Parser key "model.phi"'),
    (["--", "--model.variant", "b1"], "give exactly one of variant"),
    (["--", "--data.root", "/nonexistent/shards"], "shards not visible from"),
    (["--signal", "TERM"], "unusable requeue signal"),
    (["--time", "2:00"], "--time=2:00 is not longer than the requeue signal's lead (120 s)"),
    (["--time", "4h"], "--time=4h is not a SLURM time limit"),
    (["--cpus-per-task", "2", "--", "--data.num_workers", "8"],
     "--cpus-per-task=2 but data.num_workers=8: each task needs 9 CPUs (one per loader worker + the training "
     "process); request --cpus-per-task=9 or lower data.num_workers"),
    (["--cpus-per-task", "0"], "--cpus-per-task must be ≥ 1"),
    (["--setup", "/nonexistent/env.sh"], "--setup /nonexistent/env.sh not found"),
])
def test_bad_requests_are_refused(shards: Path, capsys: pytest.CaptureFixture[str], args: list[str],
                                  message: str) -> None:
    options, overrides = (args[:args.index("--")], args[args.index("--") + 1:]) if "--" in args else (args, [])
    code, out, err = submit(capsys, "--config", DEMO, "--no-requeue", "--dry-run", *options,
                            "--", "--data.root", str(shards), *overrides)
    assert code == 2 and out == ""
    assert err.startswith("pipeline submit: error: ") and message in err and err.count("\n") == 1, err


def test_requeue_needs_scontrol(shards: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                capsys: pytest.CaptureFixture[str]) -> None:
    no_slurm(monkeypatch, tmp_path)
    code, _, err = submit(capsys, "--config", DEMO, "--", "--data.root", str(shards))
    assert code == 2 and "`scontrol` is not on PATH" in err, err
    code, _, err = submit(capsys, "--config", DEMO, "--no-requeue", "--", "--data.root", str(shards))
    assert code == 2 and "`sbatch` is not on PATH" in err, err


def test_manifest_submits_only_unfinished_runs(shards: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.chdir(tmp_path)
    runs = [RunEntry(DEMO, f"runs/phis/phi{i}", ["--model.phi", str(i), "--data.root", str(shards)]) for i in range(4)]
    manifest = write_manifest(tmp_path / "runs" / "phis" / "run_manifest.json", runs)
    for i in (1, 2):
        Path(runs[i].run_dir).mkdir(parents=True)
        (Path(runs[i].run_dir) / "result.json").write_text(json.dumps({"top1": 0.5}))
    code, out, _ = submit(capsys, "--manifest", str(manifest), "--max-parallel", "2", "--no-requeue", "--dry-run")
    assert code == 0
    words = shlex.split(out)
    assert "--array=0,3%2" in words and str(REPO / "slurm" / "array.sbatch") in words, out
    for i in (0, 3):
        (Path(runs[i].run_dir) / "result.json").parent.mkdir(parents=True, exist_ok=True)
        (Path(runs[i].run_dir) / "result.json").write_text("{}")
    code, out, err = submit(capsys, "--manifest", str(manifest), "--no-requeue", "--dry-run")
    assert code == 0 and out == "" and "nothing to submit" in err
