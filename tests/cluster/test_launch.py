"""The in-job launcher: allocation → srun command, unique run names, environment, CPU check (no SLURM needed)."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.cluster.checks import check_overrides, check_tasks_per_node, time_limit_s
from pipeline.cluster.launch import Job, job_run_name, prepare, run_dir_overrides, srun_command, task_env
from pipeline.errors import PipelineError

DEMO = str(Path(__file__).resolve().parents[2] / "configs" / "demo.yaml")

ENV = {"SLURM_JOB_ID": "42", "SLURM_NNODES": "2", "SLURM_NTASKS_PER_NODE": "4", "SLURM_GPUS_ON_NODE": "4",
       "SLURM_CPUS_PER_TASK": "8", "MASTER_ADDR": "stale-host", "MASTER_PORT": "1234"}


def test_devices_come_from_the_allocation() -> None:
    job = Job.from_env(ENV)
    cmd = srun_command(job, "c.yaml", ["--model.phi", "1"])
    assert cmd[:3] == ["srun", "--kill-on-bad-exit=1", "--cpus-per-task=8"]
    tail = " ".join(cmd[cmd.index("fit"):])
    assert tail == ("fit --config c.yaml --model.phi 1 --trainer.num_nodes 2 --trainer.devices 4 "
                    "--trainer.accelerator gpu --ckpt_path last")
    cpu = Job.from_env({**ENV, "SLURM_GPUS_ON_NODE": "0"})
    assert "--trainer.accelerator cpu" in " ".join(srun_command(cpu, "c.yaml", []))
    env = task_env(job, ENV)
    assert "MASTER_ADDR" not in env and "MASTER_PORT" not in env  # Lightning derives them from the job
    assert env["OMP_NUM_THREADS"] == "8"


def test_refusals() -> None:
    with pytest.raises(PipelineError, match="not inside a SLURM job"):
        Job.from_env({})
    with pytest.raises(PipelineError, match="--ntasks-per-node"):
        Job.from_env({"SLURM_JOB_ID": "1", "SLURM_NNODES": "1"})
    with pytest.raises(PipelineError, match="use --ntasks-per-node=4"):
        check_tasks_per_node(1, 4)
    check_tasks_per_node(3, 0)  # CPU-only: any number of processes per node
    for arg in ("--trainer.devices=2", "--trainer.num_nodes", "--ckpt_path"):
        with pytest.raises(PipelineError, match="set by the SLURM launcher"):
            check_overrides([arg, "1"])
    with pytest.raises(PipelineError, match="<root>/<sweep>/<name>"):
        run_dir_overrides(Path("phi0"))


def test_run_name_is_unique_per_job_and_stable_across_restarts(tmp_path: Path) -> None:
    first = Job.from_env({**ENV, "SLURM_JOB_ID": "7"})
    name = job_run_name("compound-phi0", first, tmp_path)
    assert name.startswith("compound-phi0-j7-")
    (tmp_path / "compound-phi0-j7-20200101T000000").mkdir()  # a job 7 from before slurmctld's state was wiped
    (tmp_path / name).mkdir()
    restart = Job.from_env({**ENV, "SLURM_JOB_ID": "7", "SLURM_RESTART_COUNT": "2"})
    assert job_run_name("compound-phi0", restart, tmp_path) == name
    assert run_dir_overrides(Path("runs/s/n")) == ["--run.root", "runs", "--run.sweep", "s", "--run.name", "n"]


def test_time_limits() -> None:
    cases = {"90": 5400, "1:30": 90, "4:00:00": 14400, "2-0": 172800, "1-2:3": 93780, "1-2:3:4": 93784}
    assert {text: time_limit_s(text) for text in cases} == cases
    assert time_limit_s("UNLIMITED") is None


def test_cpus_per_task_inside_the_job(shards: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The launcher cannot change the allocation: too few CPUs for the loader workers fail the job at once."""
    monkeypatch.chdir(tmp_path)
    env = {"SLURM_JOB_ID": "9", "SLURM_NNODES": "1", "SLURM_NTASKS_PER_NODE": "2", "CLUSTER_REQUEUE": "0"}
    argv = ["train", DEMO, "--data.root", str(shards), "--data.num_workers", "2"]
    with pytest.raises(PipelineError, match=r"^--cpus-per-task=1 but data.num_workers=2: each task needs 3 CPUs"):
        prepare(argv, env)  # no --cpus-per-task, no CPU count: SLURM's default of one CPU per task
    with pytest.raises(PipelineError, match=r"^--cpus-per-task=2 but data.num_workers=2"):
        prepare(argv, {**env, "SLURM_CPUS_PER_TASK": "2"})
    cmd, task, _ = prepare(argv, {**env, "SLURM_CPUS_ON_NODE": "6"})  # e.g. --exclusive: 6 CPUs for 2 tasks
    assert task["OMP_NUM_THREADS"] == "3" and "--cpus-per-task=3" not in cmd  # srun keeps the job's own split
    assert not (tmp_path / "runs").exists()  # checks only; main() creates the run directory
