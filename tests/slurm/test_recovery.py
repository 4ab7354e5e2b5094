"""A crashed node costs minutes, not the run (the real two-node cluster of conftest.py):

(a) rank 1 of a 2-node job SIGKILLed mid-epoch: the launcher requeues the job, which resumes from the
time-based last.ckpt and ends COMPLETED with the uninterrupted step count, one result.json, one W&B run;
(b) a run whose job was cancelled mid-epoch is finished by ``pipeline submit --resume`` with the same count;
(c) in a 2-run job array the *first* task is preempted: only it restarts, both finish;
(d) a run that fails the same way twice stops retrying and says why in one line.
"""

from __future__ import annotations

import json
import os
import re
import signal
import time
from pathlib import Path

import pytest

from tests.slurm.test_slurm import BATCHES, DEMO, EPOCHS, REPO, TRAIN, global_step, only, small, wait_for, wandb_runs

pytestmark = [pytest.mark.slurm, pytest.mark.slow]
FREQUENT = ("--run.checkpoint_every_min", "0.003")  # last.ckpt every ~0.2 s of training: mid-epoch ones exist


def task_pid(job: str, rank: int, timeout: float) -> int:
    """The pid of the training task of global rank ``rank`` in job ``job`` (once it trains)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for proc in Path("/proc").glob("[0-9]*"):
            try:
                cmd, env = proc.joinpath("cmdline").read_bytes(), b"\0" + proc.joinpath("environ").read_bytes()
            except OSError:
                continue
            if (b"\0pipeline.cli\0fit\0" in cmd and f"\0SLURM_JOB_ID={job}\0".encode() in env
                    and f"\0SLURM_PROCID={rank}\0".encode() in env):
                return int(proc.name)
        time.sleep(0.2)
    raise AssertionError(f"no rank {rank} task of job {job} after {timeout:.0f} s")


def test_a_killed_task_is_retried_from_its_checkpoint(slurm_cluster, shards: Path, tmp_path: Path) -> None:
    done = slurm_cluster.run("pipeline", "submit", "--config", DEMO, "--nodes", "2", "--cpus-per-task", "1",
                             "--", *small(shards), *FREQUENT, cwd=tmp_path)
    job = done.stdout.strip()
    log = only(list((tmp_path / "runs" / "demo" / "slurm-logs").glob(f"*-{job}-*.out")))
    wait_for(log, "RequeueOnSignal: SIGUSR1 checkpoints and requeues", 1, timeout=240)  # training has started
    run_dir = only(list((tmp_path / "runs" / "demo").glob(f"compound-phi0-j{job}-*")))
    deadline = time.monotonic() + 120
    while not (run_dir / "checkpoints" / "last.ckpt").is_file():  # a time-based checkpoint, mid-epoch
        assert time.monotonic() < deadline, log.read_text()[-3000:]
        time.sleep(0.2)
    os.kill(task_pid(job, 1, timeout=60), signal.SIGKILL)
    info = slurm_cluster.wait(job, timeout=420, states={"COMPLETED", "FAILED", "CANCELLED"})
    text = log.read_text()
    assert info["JobState"] == "COMPLETED" and info["Restarts"] == "1", text[-5000:]
    assert re.search(rf"pipeline launch: failed \(exit \d+\); retry 1 of 3 from last.ckpt at step \d+: "
                     rf"requeued SLURM job {job}", text), text[-5000:]
    assert global_step(run_dir) == EPOCHS * BATCHES
    assert len(list((tmp_path / "runs").rglob("result.json"))) == 1
    result = json.loads((run_dir / "result.json").read_text())
    assert set(wandb_runs(run_dir)) == {result["wandb_run_id"]}  # one W&B run, resumed
    failures = json.loads((run_dir / "retries.json").read_text())
    assert [f["restart"] for f in failures] == [0] and 0 < failures[0]["step"] < EPOCHS * BATCHES


def test_b_submit_resume_finishes_a_cancelled_run(slurm_cluster, shards: Path, tmp_path: Path) -> None:
    done = slurm_cluster.run("pipeline", "submit", "--config", DEMO, "--nodes", "2", "--cpus-per-task", "1",
                             "--", *small(shards), *FREQUENT, cwd=tmp_path)
    job = done.stdout.strip()
    log = only(list((tmp_path / "runs" / "demo" / "slurm-logs").glob(f"*-{job}-*.out")))
    wait_for(log, "RequeueOnSignal: SIGUSR1 checkpoints and requeues", 1, timeout=240)
    run_dir = only(list((tmp_path / "runs" / "demo").glob(f"compound-phi0-j{job}-*")))
    deadline = time.monotonic() + 120
    while not (run_dir / "checkpoints" / "last.ckpt").is_file():  # steps trained, however loaded the machine
        assert time.monotonic() < deadline, log.read_text()[-3000:]
        time.sleep(0.2)
    slurm_cluster.run("scancel", job)
    assert slurm_cluster.wait(job, timeout=120)["JobState"] == "CANCELLED"
    # SLURM says CANCELLED at once; the tasks save at their next batch end, within KillWait
    wait_for(log, "RequeueOnSignal: SIGTERM → saved", 1, timeout=60)
    saved = int(re.search(r"SIGTERM → saved \S+ at global step (\d+)", log.read_text()).group(1))
    assert 0 < saved < EPOCHS * BATCHES and not (run_dir / "result.json").exists()

    resumed = slurm_cluster.run("pipeline", "submit", "--resume", str(run_dir), "--nodes", "2",
                                "--cpus-per-task", "1", cwd=tmp_path).stdout.strip()
    info = slurm_cluster.wait(resumed, timeout=300)
    text = only(list((tmp_path / "runs" / "demo" / "slurm-logs").glob(f"*-{resumed}-*.out"))).read_text()
    assert info["JobState"] == "COMPLETED", text[-5000:]
    assert "Restored all states from the checkpoint" in text
    assert global_step(run_dir) == EPOCHS * BATCHES  # the same run, the same count
    result = json.loads((run_dir / "result.json").read_text())
    assert set(wandb_runs(run_dir)) == {result["wandb_run_id"]}
    assert [p.name for p in (tmp_path / "runs" / "demo").iterdir() if p.name != "slurm-logs"] == [run_dir.name]
    again = slurm_cluster.run("pipeline", "submit", "--resume", str(run_dir), check=False, cwd=tmp_path)
    assert again.returncode == 2 and again.stderr == (f"pipeline submit: error: {run_dir} is finished (result.json "
                                                      "exists): nothing to resume\n")


def test_c_a_preempted_array_task_requeues_alone(slurm_cluster, shards: Path, tmp_path: Path) -> None:
    root = tmp_path / "runs"
    sweep = ("pipeline", "sweep", "scale", "--config", DEMO, "--name", "arr", "--phi", "0,1", "--submit", "slurm",
             "--max-parallel", "2", "--slurm-arg=--cpus-per-task=1", "--", *small(shards), "--run.root", str(root))
    job = slurm_cluster.run(*sweep, cwd=tmp_path).stdout.strip().splitlines()[-1]
    logs = root / "arr" / "slurm-logs"
    for task in (0, 1):  # both tasks train
        deadline = time.monotonic() + 240
        while not list(logs.glob(f"*-{job}_{task}-*.out")):
            assert time.monotonic() < deadline
            time.sleep(0.5)
        wait_for(only(list(logs.glob(f"*-{job}_{task}-*.out"))), "RequeueOnSignal: SIGUSR1 checkpoints and requeues",
                 1, timeout=240)
    first = only(list(logs.glob(f"*-{job}_0-*.out")))
    slurm_cluster.run("scancel", "--signal=USR1", f"{job}_0")  # the task whose job id is the array's own
    wait_for(first, f"requeued SLURM job {job}_0", 1, timeout=120)
    deadline = time.monotonic() + 420
    while slurm_cluster.run("squeue", "-h", "-j", job, check=False).stdout.strip():
        assert time.monotonic() < deadline, slurm_cluster.run("squeue", "-j", job).stdout
        time.sleep(1)
    tasks = {task: slurm_cluster.job(f"{job}_{task}") for task in (0, 1)}
    assert [tasks[t]["JobState"] for t in (0, 1)] == ["COMPLETED", "COMPLETED"]
    assert [tasks[t]["Restarts"] for t in (0, 1)] == ["1", "0"], tasks
    for name in ("compound-phi0", "compound-phi1"):
        assert global_step(root / "arr" / name) == EPOCHS * BATCHES


def test_d_the_same_failure_twice_stops_the_retries(slurm_cluster, shards: Path, tmp_path: Path) -> None:
    """Rank 1 dies after step 11 on every start (a deterministic bug): the retry resumes from the epoch's
    last.ckpt (step 8), dies at 11 again with no progress, and the launcher stops with one line."""
    crash = "CRASH_AT_STEP=11,CRASH_RANK=1"
    job = slurm_cluster.sbatch("-N2", "--ntasks-per-node=1", "--cpus-per-task=1",
                               f"--export=ALL,{crash},PYTHONPATH={REPO}", TRAIN, DEMO, *small(shards),
                               "--trainer.callbacks+=tests.crash.CrashAt", "--run.checkpoint_every_min", "0",
                               cwd=tmp_path)
    info = slurm_cluster.wait(job, timeout=420, states={"COMPLETED", "FAILED", "CANCELLED"})
    log = (tmp_path / f"slurm-train-{job}.out").read_text()
    assert info["JobState"] == "FAILED" and info["Restarts"] == "1", log[-5000:]
    errors = [line for line in log.splitlines() if line.startswith("pipeline launch: error:")]
    run_dir = only(list((tmp_path / "runs" / "demo").glob(f"compound-phi0-j{job}-*")))
    assert len(errors) == 1 and re.fullmatch(
        r"pipeline launch: error: failed the same way twice \(exit \d+, last.ckpt at step 8\): not retried; fix "
        rf"the cause, then: pipeline submit --resume {re.escape(str(run_dir))}", errors[0]), errors
    assert [f["step"] for f in json.loads((run_dir / "retries.json").read_text())] == [8, 8]
    assert not (run_dir / "result.json").exists()
