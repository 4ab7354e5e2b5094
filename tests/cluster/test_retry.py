"""A failed task is retried from its checkpoint, boundedly; an ended run resumes in its own directory.

No SLURM needed: the retry rule reads real checkpoints and records failures in the run directory, the child
runner forwards real signals, and ``pipeline submit --resume --dry-run`` only prints.
"""

from __future__ import annotations

import json
import shlex
import signal
import sys
import time
from pathlib import Path

import pytest
import torch

from pipeline import cli
from pipeline.cluster.launch import prepare, resumable_config, retry_decision, run_child
from pipeline.errors import PipelineError
from pipeline.training.checkpoint import AtomicCheckpointIO

REPO = Path(__file__).resolve().parents[2]
DEMO = str(REPO / "configs" / "demo.yaml")
JOB = {"SLURM_JOB_ID": "7", "SLURM_RESTART_COUNT": "0"}


def checkpoint_at(run: Path, step: int) -> None:
    """A real ``last.ckpt`` at ``step`` (written as training writes it)."""
    AtomicCheckpointIO().save_checkpoint({"global_step": step, "w": torch.ones(2)}, run / "checkpoints" / "last.ckpt")


def test_a_failure_with_progress_is_retried_up_to_the_limit(tmp_path: Path) -> None:
    env = {**JOB, "CLUSTER_MAX_RETRIES": "2"}
    checkpoint_at(tmp_path, 40)
    assert retry_decision(tmp_path, 137, env) == (True, "failed (exit 137); retry 1 of 2 from last.ckpt at step 40")
    checkpoint_at(tmp_path, 75)  # the retry trained on before the next failure
    assert retry_decision(tmp_path, 137, {**env, "SLURM_RESTART_COUNT": "1"})[0]
    checkpoint_at(tmp_path, 90)
    retry, why = retry_decision(tmp_path, 137, {**env, "SLURM_RESTART_COUNT": "2"})
    assert not retry and why.startswith("failed 3 times (limit 2, CLUSTER_MAX_RETRIES): not retried; fix the cause, "
                                        f"then: pipeline submit --resume {tmp_path}")
    failures = json.loads((tmp_path / "retries.json").read_text())
    assert [(f["job"], f["restart"], f["exit"], f["step"]) for f in failures] == [
        ("7", 0, 137, 40), ("7", 1, 137, 75), ("7", 2, 137, 90)]


def test_the_same_failure_twice_is_a_bug_not_bad_luck(tmp_path: Path) -> None:
    checkpoint_at(tmp_path, 8)
    assert retry_decision(tmp_path, 1, JOB)[0]
    retry, why = retry_decision(tmp_path, 1, {**JOB, "SLURM_RESTART_COUNT": "1"})  # no progress since
    assert not retry and why.startswith("failed the same way twice (exit 1, last.ckpt at step 8): not retried")


@pytest.mark.parametrize(("code", "env", "step", "why"), [
    (2, JOB, 8, "exit 2 (a refusal or a non-finite loss) is not retried"),
    (137, JOB, None, "failed (exit 137) before its first checkpoint: nothing to resume"),
    (137, {**JOB, "CLUSTER_REQUEUE": "0"}, 8, "failed (exit 137) with last.ckpt at step 8; requeue is off"),
    (137, {**JOB, "CLUSTER_MAX_RETRIES": "0"}, 8, "failed 1 times (limit 0, CLUSTER_MAX_RETRIES)"),
])
def test_not_retried(tmp_path: Path, code: int, env: dict[str, str], step: int | None, why: str) -> None:
    if step is not None:
        checkpoint_at(tmp_path, step)
    retry, text = retry_decision(tmp_path, code, env)
    assert not retry and text.startswith(why), text


def test_a_bad_retry_limit_is_one_line(tmp_path: Path) -> None:
    checkpoint_at(tmp_path, 8)
    with pytest.raises(PipelineError, match=r"^CLUSTER_MAX_RETRIES='three' must be a count ≥ 0"):
        retry_decision(tmp_path, 137, {**JOB, "CLUSTER_MAX_RETRIES": "three"})


def test_the_child_gets_the_signals_the_launcher_gets() -> None:
    """SIGTERM to the launcher reaches srun (here a Python child that reports and exits 3)."""
    child = ("import signal, sys, time\n"
             "signal.signal(signal.SIGTERM, lambda *a: sys.exit(3))\n"
             "print('ready', flush=True); time.sleep(60)")
    sent = []

    def send_later(*_: object) -> None:
        sent.append(time.monotonic())
        signal.raise_signal(signal.SIGTERM)

    signal.signal(signal.SIGALRM, send_later)
    signal.setitimer(signal.ITIMER_REAL, 1.5)
    code, received = run_child([sys.executable, "-c", child], {}, (signal.SIGTERM,))
    assert code == 3 and received == {signal.SIGTERM} and sent
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # the launcher's own handling is restored
    assert run_child([sys.executable, "-c", "import os; os.kill(os.getpid(), 9)"], {}, ())[0] == 137


@pytest.fixture
def ended_run(shards: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> Path:
    """A run directory as a fit leaves it: its resolved config.yaml (no result yet)."""
    run = tmp_path / "runs" / "demo" / "compound-phi0-j5-20261203T000000"
    with pytest.raises(SystemExit) as printed:  # LightningCLI exits after printing
        cli.main(["fit", "--config", DEMO, "--data.root", str(shards), "--run.name", run.name,
                  "--run.root", str(run.parents[1]), "--print_config"])
    assert printed.value.code in (0, None)
    run.mkdir(parents=True)
    (run / "config.yaml").write_text(capsys.readouterr().out)
    return run


def test_submit_resume_continues_the_run_in_its_directory(ended_run: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["submit", "--resume", str(ended_run), "--nodes", "2", "--max-retries", "5", "--dry-run"]) == 0
    words = shlex.split(capsys.readouterr().out)
    assert words[-2:] == ["--resume", str(ended_run)] and words[-3].endswith("slurm/train.sbatch")
    assert "CLUSTER_MAX_RETRIES=5" in words and f"--job-name={ended_run.name}" in words
    env = {"SLURM_JOB_ID": "9", "SLURM_NNODES": "2", "SLURM_NTASKS_PER_NODE": "1", "CLUSTER_REQUEUE": "0"}
    cmd, _, directory = prepare(["resume", str(ended_run)], env)  # the launcher: this directory, not a new one
    assert directory == ended_run and cmd[-8:] == ["--trainer.num_nodes", "2", "--trainer.devices", "1",
                                                   "--trainer.accelerator", "cpu", "--ckpt_path", "last"]
    assert cmd[cmd.index("--config") + 1] == str(ended_run / "config.yaml")


def test_resume_refusals(ended_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (ended_run / "result.json").write_text("{}")
    for run, message in ((ended_run, f"{ended_run} is finished (result.json exists): nothing to resume"),
                         (tmp_path, f"{tmp_path} is not a run directory (no config.yaml)")):
        assert cli.main(["submit", "--resume", str(run), "--dry-run"]) == 2
        out, err = capsys.readouterr()
        assert out == "" and err.startswith(f"pipeline submit: error: {message}") and err.count("\n") == 1
        with pytest.raises(PipelineError, match=r"nothing to resume|not a run directory"):
            resumable_config(run)
