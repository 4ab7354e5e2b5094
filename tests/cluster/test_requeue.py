"""RequeueOnSignal on two real gloo ranks: one signalled rank stops both at the same step; resume continues.

A signal during validation stops at that validation's end; one recorded before training (the early
handler of pipeline.cli / the sbatch scripts) stops both ranks before any step, with nothing saved.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from pipeline import preemption
from pipeline.errors import PipelineError
from pipeline.preemption import parse_signal
from pipeline.training.requeue import RequeueOnSignal

SCRIPT = Path(__file__).with_name("signal_run.py")


def _fit(out: Path, max_steps: int, *signal_at: str, env: dict[str, str] | None = None) -> str:
    env = {**{k: v for k, v in os.environ.items() if not k.startswith(("SLURM_", "CLUSTER_"))}, **(env or {})}
    done = subprocess.run([sys.executable, str(SCRIPT), str(out), str(max_steps), *signal_at],
                          env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout + done.stderr


def _step(ckpt: Path) -> int:
    return torch.load(ckpt, weights_only=True, map_location="cpu")["global_step"]


@pytest.mark.slow
def test_signal_on_one_rank_checkpoints_both_and_resume_finishes(tmp_path: Path) -> None:
    last = tmp_path / "checkpoints" / "last.ckpt"
    log = _fit(tmp_path, 8, "1", "SIGUSR1", "3")  # only rank 1 is signalled
    assert "rank 0 stopped at step 3" in log and "rank 1 stopped at step 3" in log, log
    assert "SIGUSR1 → saved" in log and _step(last) == 3
    assert "requeued" not in log  # outside SLURM: checkpoint and stop only

    log = _fit(tmp_path, 8, "0", "SIGTERM", "5")  # plain scancel: checkpoint, no requeue
    assert "Restored all states" in log and "SIGTERM → saved" in log, log
    assert "rank 1 stopped at step 5" in log and _step(last) == 5

    log = _fit(tmp_path, 8)
    assert "rank 0 stopped at step 8" in log and "rank 1 stopped at step 8" in log, log
    assert _step(last) == 8


def test_signal_names(monkeypatch: pytest.MonkeyPatch) -> None:
    assert parse_signal("USR1").name == "SIGUSR1"
    assert parse_signal("sigusr2").name == "SIGUSR2"
    monkeypatch.setenv("CLUSTER_REQUEUE_SIGNAL", "USR2")
    assert RequeueOnSignal().signal.name == "SIGUSR2"
    assert RequeueOnSignal("USR1").signal.name == "SIGUSR1"
    for bad in ("TERM", "KILL", "HUP2", ""):
        with pytest.raises(PipelineError, match="use USR1"):
            parse_signal(bad)


@pytest.mark.slow
def test_signal_during_validation_stops_at_its_end(tmp_path: Path) -> None:
    log = _fit(tmp_path, 8, "0", "SIGUSR1", "val3")  # validation after step 3; the next batch end would be step 4
    assert "rank 0 stopped at step 3" in log and "rank 1 stopped at step 3" in log, log
    assert "SIGUSR1 → saved" in log and _step(tmp_path / "checkpoints" / "last.ckpt") == 3


@pytest.mark.slow
def test_signal_before_training_stops_without_a_checkpoint(tmp_path: Path) -> None:
    """As in a job whose batch shell or task got the signal while starting (requeue off: no scontrol here)."""
    env = {"SLURM_JOB_ID": "1", preemption.REQUEUE_ENV: "0", preemption.SIGNALLED_ENV: "USR1"}
    log = _fit(tmp_path, 8, env=env)
    assert "rank 0 stopped at step 0" in log and "rank 1 stopped at step 0" in log, log
    assert "SIGUSR1 → nothing trained in this start yet" in log
    assert not (tmp_path / "checkpoints").exists()


@pytest.mark.parametrize("install", [True, False])
def test_early_handler_records_instead_of_dying(install: bool) -> None:
    """A requeue signal right after install() is recorded; without install() it kills the process."""
    code = ("import os\nfrom pipeline import preemption\n"
            f"sig = preemption.install() if {install} else preemption.requeue_signal()\n"
            "os.kill(os.getpid(), sig)\nprint(preemption.received(sig))")
    env = {**os.environ, "SLURM_JOB_ID": "1", preemption.SIGNAL_ENV: "USR2"}
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60)
    assert (done.returncode, done.stdout) == ((0, "True\n") if install else (-12, "")), done.stderr


@pytest.mark.parametrize(("env", "expected"), [
    ({"SLURM_JOB_ID": "57"}, "57"),
    # an array's first task: its job id is the array's own, which `scontrol requeue` takes as every task
    ({"SLURM_JOB_ID": "100", "SLURM_ARRAY_JOB_ID": "100", "SLURM_ARRAY_TASK_ID": "0"}, "100_0"),
    ({"SLURM_JOB_ID": "101", "SLURM_ARRAY_JOB_ID": "100", "SLURM_ARRAY_TASK_ID": "1"}, "100_1"),
])
def test_the_requeue_names_this_task_alone(env: dict[str, str], expected: str) -> None:
    assert preemption.job_to_requeue(env) == expected
