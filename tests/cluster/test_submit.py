"""``pipeline submit``: every check runs before sbatch; --dry-run shows the command that would be submitted."""

from __future__ import annotations

import json
import shlex
from pathlib import Path

import pytest

from pipeline import cli
from pipeline.cluster.manifest import RunEntry, write_manifest

REPO = Path(__file__).resolve().parents[2]
DEMO = str(REPO / "configs" / "demo.yaml")


@pytest.fixture(scope="module")
def shards(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The embedded digits as real shards."""
    out = tmp_path_factory.mktemp("digits")
    assert cli.main(["shards", "digits", "--out", str(out)]) == 0
    return out


def submit(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = cli.main(["submit", *args])
    out, err = capsys.readouterr()
    return code, out, err


def test_dry_run_prints_the_checked_command(shards: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.chdir(tmp_path)
    code, out, _ = submit(capsys, "--config", DEMO, "--nodes", "2", "--gpus-per-node", "4", "--cpus-per-task", "8",
                          "--signal", "USR2", "--time", "1:00:00", "--dry-run", "--", "--data.root", str(shards))
    assert code == 0
    words = shlex.split(out)
    assert "CLUSTER_REQUEUE_SIGNAL=USR2" in words and "CLUSTER_REQUEUE=1" in words
    for opt in ("--nodes=2", "--ntasks-per-node=4", "--gpus-per-node=4", "--cpus-per-task=8", "--signal=USR2@120",
                "--requeue", "--time=1:00:00", "--job-name=compound-phi0", str(REPO / "slurm" / "train.sbatch")):
        assert opt in words, out
    assert words[-3:] == [DEMO, "--data.root", str(shards)]


@pytest.mark.parametrize(("args", "message"), [
    (["--gpus-per-node", "2", "--ntasks-per-node", "1"], "--ntasks-per-node=1 but 2 GPUs per node"),
    (["--", "--trainer.devices", "3"], "--trainer.devices is set by the SLURM launcher"),
    (["--", "--model.phi", "one"], 'demo.yaml: Parser key "model.phi"'),
    (["--", "--model.variant", "b1"], "give exactly one of variant"),
    (["--", "--data.root", "/nonexistent/shards"], "shards not visible from"),
    (["--signal", "TERM"], "unusable requeue signal"),
    (["--time", "2:00"], "--time=2:00 is not longer than the requeue signal's lead (120 s)"),
    (["--time", "4h"], "--time=4h is not a SLURM time limit"),
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
    monkeypatch.setenv("PATH", str(tmp_path))  # a host without SLURM's client commands
    code, _, err = submit(capsys, "--config", DEMO, "--dry-run", "--", "--data.root", str(shards))
    assert code == 2 and "`scontrol` is not on PATH" in err, err


def test_manifest_submits_only_unfinished_runs(shards: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.chdir(tmp_path)
    runs = [RunEntry(DEMO, f"runs/phis/phi{i}", ["--model.phi", str(i), "--data.root", str(shards)]) for i in range(4)]
    manifest = write_manifest(tmp_path / "runs" / "phis" / "manifest.json", runs)
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
