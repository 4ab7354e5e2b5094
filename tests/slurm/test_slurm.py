"""slurm/*.sbatch and ``pipeline submit`` against a real two-node SLURM cluster (see conftest.py).

(a) train.sbatch trains the demo config on 2 nodes × 1 task (DDP over gloo across the nodes);
(b) a USR1 mid-epoch checkpoints, requeues and resumes to the same step count and W&B run (twice);
plain scancel checkpoints and does not requeue;
(c) a 3-run ``pipeline sweep scale --submit slurm`` runs as a throttled job array, re-submitting it finds
nothing to do, and ``pipeline report`` on the sweep lists the 3 runs with their numbers;
(d) mismatched or impossible requests are refused before sbatch, or at the top of the job;
(e) a USR1 while the job starts (the launcher checking, then the tasks importing) requeues it, and the
run then completes.
"""

from __future__ import annotations

import json
import re
import signal
import sys
import time
from pathlib import Path

import pytest
from scipy import stats

from pipeline.training.checkpoint import load_checkpoint

pytestmark = [pytest.mark.slurm, pytest.mark.slow]
HERE = Path(__file__).parent
REPO = HERE.parents[1]
DEMO = str(REPO / "configs" / "demo.yaml")
TRAIN = str(REPO / "slurm" / "train.sbatch")
EPOCHS, BATCHES = 2, 8  # 16 optimizer steps: long enough to interrupt mid-epoch, short enough for CI
PREEMPTIONS = 2


def small(shards: Path) -> list[str]:
    """Overrides that keep a demo run to a few seconds of training."""
    return ["--data.root", str(shards), "--trainer.max_epochs", str(EPOCHS),
            "--trainer.limit_train_batches", str(BATCHES), "--trainer.log_every_n_steps", "1"]


def only(paths: list[Path]) -> Path:
    assert len(paths) == 1, paths
    return paths[0]


def wandb_runs(run_dir: Path) -> list[str]:
    """The W&B run id of every offline run directory (one per start of the run)."""
    dirs = sorted((run_dir / "wandb").glob("offline-run-*"))
    assert all(any(d.glob("run-*.wandb")) for d in dirs), dirs
    return [d.name.rsplit("-", 1)[1] for d in dirs]


def global_step(run_dir: Path) -> int:
    """The optimizer steps the finished run took (from its result record)."""
    return json.loads((run_dir / "result.json").read_text())["global_step"]


def wait_for(path: Path, text: str, count: int, timeout: float) -> None:
    """Wait until ``text`` occurs ``count`` times in the file at ``path``."""
    deadline = time.monotonic() + timeout
    content = ""
    while time.monotonic() < deadline:
        content = path.read_text() if path.exists() else ""
        if content.count(text) >= count:
            return
        time.sleep(0.5)
    raise AssertionError(f"{text!r} not {count}× in {path} after {timeout:.0f} s:\n{content[-3000:]}")


def catching(job: int, module: str, count: int, timeout: float) -> None:
    """Wait until ``count`` processes of job ``job`` run ``python -m <module>`` with a USR1 handler (the early one)."""
    mask = 1 << (signal.SIGUSR1 - 1)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = 0
        for proc in Path("/proc").glob("[0-9]*"):
            try:
                if (f"\0{module}\0".encode() in proc.joinpath("cmdline").read_bytes()
                        and f"\0SLURM_JOB_ID={job}\0".encode() in b"\0" + proc.joinpath("environ").read_bytes()):
                    status = proc.joinpath("status").read_text()
                    found += bool(int(re.search(r"SigCgt:\s*([0-9a-f]+)", status).group(1), 16) & mask)
            except (OSError, AttributeError):
                continue  # exited meanwhile
        if found >= count:
            return
        time.sleep(0.05)
    raise AssertionError(f"not {count} processes of job {job} run {module} with a USR1 handler after {timeout:.0f} s")


def test_two_node_gloo_all_reduce(slurm_cluster, tmp_path: Path) -> None:
    """The harness itself: both ranks meet at Lightning's SLURM address/port (n1 resolves) and sum."""
    job = slurm_cluster.sbatch("-N2", "--ntasks-per-node=1", "--cpus-per-task=1", "-o", "out-%j.log",
                               "--wrap", f"srun {sys.executable} {HERE / 'allreduce.py'}", cwd=tmp_path)
    info = slurm_cluster.wait(job, timeout=120)
    log = (tmp_path / f"out-{job}.log").read_text()
    assert info["JobState"] == "COMPLETED", log
    assert sorted(line.split(":")[0] for line in log.splitlines() if line.startswith("rank")) == [
        "rank 0/2 on n1", "rank 1/2 on n2"]
    assert log.count("sum=3") == 2, log


@pytest.fixture(scope="module")
def uninterrupted(slurm_cluster, shards: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """(a) ``sbatch -N2 --ntasks-per-node=1 slurm/train.sbatch demo.yaml …``: the run directory it trained."""
    work = tmp_path_factory.mktemp("a")
    job = slurm_cluster.sbatch("-N2", "--ntasks-per-node=1", "--cpus-per-task=1", TRAIN, DEMO, *small(shards),
                               cwd=work)
    info = slurm_cluster.wait(job, timeout=300)
    log = (work / f"slurm-train-{job}.out").read_text()
    assert info["JobState"] == "COMPLETED", log[-5000:]
    return only(list((work / "runs" / "demo").glob(f"compound-phi0-j{job}-*")))


def test_a_train_sbatch_two_nodes_ddp(uninterrupted: Path) -> None:
    result = json.loads((uninterrupted / "result.json").read_text())
    assert result["world_size"] == 2  # one rank on n1, one on n2, one gloo process group
    assert global_step(uninterrupted) == EPOCHS * BATCHES
    assert wandb_runs(uninterrupted) == [result["wandb_run_id"]]
    assert (uninterrupted / "wandb_id").read_text().strip() == result["wandb_run_id"]
    assert "nodes n[1-2]" in (uninterrupted / "slurm.log").read_text()


def test_b_preempted_run_requeues_and_resumes(slurm_cluster, shards: Path, uninterrupted: Path,
                                              tmp_path: Path) -> None:
    done = slurm_cluster.run("pipeline", "submit", "--config", DEMO, "--nodes", "2", "--cpus-per-task", "1",
                             "--", *small(shards), cwd=tmp_path)
    job = done.stdout.strip()
    log = only(list((tmp_path / "runs" / "demo" / "slurm-logs").glob(f"*-{job}-*.out")))
    for start in range(PREEMPTIONS):  # preempted on every start but the last: each start must make progress
        wait_for(log, "RequeueOnSignal: SIGUSR1 checkpoints and requeues", start + 1, timeout=240)  # training
        slurm_cluster.run("scancel", "--signal=USR1", job)  # what --signal=USR1@120 sends, without the wait
        wait_for(log, f"requeued SLURM job {job}", start + 1, timeout=120)
    info = slurm_cluster.wait(job, timeout=300)
    text = log.read_text()
    assert info["JobState"] == "COMPLETED" and info["Restarts"] == str(PREEMPTIONS), text[-5000:]
    saved = [int(step) for step in re.findall(r"SIGUSR1 → saved \S+ at global step (\d+)", text)]
    assert len(saved) == PREEMPTIONS and 0 < saved[0] < saved[1] < EPOCHS * BATCHES, saved
    assert text.count("Restored all states from the checkpoint") == PREEMPTIONS

    run_dir = only(list((tmp_path / "runs" / "demo").glob(f"compound-phi0-j{job}-*")))
    restarts = [line.split(" restart ")[1][0] for line in (run_dir / "slurm.log").read_text().splitlines()
                if " restart " in line]  # each start's line (the others say how it ended)
    assert restarts == [str(i) for i in range(PREEMPTIONS + 1)]  # every start trained the same run directory
    assert global_step(run_dir) == global_step(uninterrupted) == EPOCHS * BATCHES
    result = json.loads((run_dir / "result.json").read_text())
    assert wandb_runs(run_dir) == [result["wandb_run_id"]] * (PREEMPTIONS + 1)  # one W&B run, resumed


def test_scancel_checkpoints_without_requeue(slurm_cluster, shards: Path, tmp_path: Path) -> None:
    """Plain scancel (SIGTERM to every process of the job, W&B's service included): last.ckpt is saved."""
    job = slurm_cluster.sbatch("--cpus-per-task=1", TRAIN, DEMO, *small(shards), cwd=tmp_path)
    log = tmp_path / f"slurm-train-{job}.out"
    wait_for(log, "RequeueOnSignal: SIGUSR1 checkpoints and requeues", 1, timeout=240)
    slurm_cluster.run("scancel", str(job))
    info = slurm_cluster.wait(job, timeout=120)
    text = log.read_text()
    assert info["JobState"] == "CANCELLED" and info["Restarts"] == "0", text[-5000:]
    saved = int(re.search(r"SIGTERM → saved (\S+) at global step (\d+)", text).group(2))
    run_dir = only(list((tmp_path / "runs" / "demo").glob(f"compound-phi0-j{job}-*")))
    assert load_checkpoint(run_dir / "checkpoints" / "last.ckpt")["global_step"] == saved >= 1
    assert "requeued" not in text and not (run_dir / "result.json").exists()


def test_c_sweep_runs_as_throttled_array_then_reports(slurm_cluster, shards: Path, tmp_path: Path) -> None:
    """``pipeline sweep scale … --submit slurm``: 3 runs (compound φ = 0, 1 and dWr at s = 2, flops-matched) as
    one job array of at most 2 at once; re-submitting finds nothing to do; ``pipeline report`` on the sweep."""
    root = tmp_path / "runs"
    sweep = ("pipeline", "sweep", "scale", "--config", DEMO, "--name", "arr", "--phi", "0,1", "--strategy", "dWr",
             "--scale", "2", "--submit", "slurm", "--max-parallel", "2", "--slurm-arg=--cpus-per-task=1",
             "--", *small(shards), "--run.root", str(root), "--trainer.max_epochs", "1",
             "--trainer.limit_train_batches", "3")
    submitted = slurm_cluster.run(*sweep, cwd=tmp_path)
    job = submitted.stdout.strip().splitlines()[-1]  # after the plan table: pipeline submit's job id
    assert job.isdigit(), submitted.stdout
    assert "ArrayTaskThrottle=2" in slurm_cluster.run("scontrol", "show", "job", job).stdout
    deadline = time.monotonic() + 400
    while slurm_cluster.run("squeue", "-h", "-j", job, check=False).stdout.strip():
        assert time.monotonic() < deadline, slurm_cluster.run("squeue", "-j", job).stdout
        time.sleep(1)
    states = re.findall(r"JobState=(\w+)", slurm_cluster.run("scontrol", "show", "job", job).stdout)
    assert states == ["COMPLETED"] * 3, states
    names = ["compound-phi0", "compound-phi1", "dWr-s2"]
    results = [json.loads((root / "arr" / name / "result.json").read_text()) for name in names]
    assert [r["run_name"] for r in results] == names and [r["phi"] for r in results] == [0, 1, None]
    assert results[2]["strategy"] == "dWr" and results[0]["flops"] < results[2]["flops"] < results[1]["flops"]
    assert all(r["global_step"] == 3 and r["sweep"] == "arr" for r in results)

    again = slurm_cluster.run(*sweep, cwd=tmp_path)
    assert "nothing to submit" in again.stderr and not again.stdout.strip().splitlines()[-1].isdigit()
    states = {line.split()[0]: line.split()[-1] for line in again.stdout.splitlines() if line.strip()}
    assert [states.get(name) for name in names] == ["done"] * 3  # the plan table's state column

    report = slurm_cluster.run("pipeline", "report", str(root / "arr"), "--no-wandb", cwd=tmp_path)
    out = root / "arr" / "report"
    md, html = (out / "report.md").read_text(), (out / "report.html").read_text()
    assert str(out / "report.md") in report.stdout
    rows = [line for line in md.splitlines() if line.startswith("| arr | ")]
    assert [row.split(" | ")[1] for row in rows] == names, md
    for row, r in zip(rows, results, strict=True):  # every number from the run's own result record
        assert r["test_images"] == 180 and (r["selected_on"], r["reported_on"]) == ("val", "test")
        ci = stats.binomtest(round(180 * r["top1"]), 180).proportion_ci(method="wilson")
        cell = f"{100 * r['top1']:.1f} [{100 * ci.low:.1f}, {100 * ci.high:.1f}]"
        assert f"| {r['params'] / 1e6:.2f} | {r['flops'] / 1e6:.1f} |" in row
        assert f"| {cell} |" in row and cell in html
    images = sorted(p.name for p in out.glob("*.png"))
    assert {"accuracy.png", "runtime.png"} <= set(images)
    assert html.count("data:image/png;base64,") == len(images)
    print(f"\n{md}")  # the report's tables in the test log (pytest -s)


def test_d_bad_requests_are_refused(slurm_cluster, shards: Path, tmp_path: Path) -> None:
    queued = slurm_cluster.run("squeue", "-h", "-o", "%i").stdout
    refused = slurm_cluster.run("pipeline", "submit", "--config", DEMO, "--nodes", "2", "--gpus-per-node", "2",
                                "--ntasks-per-node", "1", "--", "--data.root", str(shards), check=False, cwd=tmp_path)
    assert refused.returncode == 2 and refused.stdout == ""
    assert refused.stderr == ("pipeline submit: error: --ntasks-per-node=1 but 2 GPUs per node: DDP needs one task "
                              "per GPU, use --ntasks-per-node=2\n")
    assert slurm_cluster.run("squeue", "-h", "-o", "%i").stdout == queued  # nothing reached sbatch

    # sbatch'd by hand, past the submit helper: the job re-checks before srun and fails fast with one line
    job = slurm_cluster.sbatch(TRAIN, DEMO, "--data.root", str(tmp_path / "no-shards"), cwd=tmp_path)
    info = slurm_cluster.wait(job, timeout=120)
    log = (tmp_path / f"slurm-train-{job}.out").read_text()
    assert info["JobState"] == "FAILED" and info["ExitCode"] == "2:0", log
    assert log.strip().splitlines()[-1].startswith("pipeline launch: error: shards not visible from "), log

    missing = tmp_path / "no-env.sh"  # the set-up hook names a file that is not there: one line, exit 2
    job = slurm_cluster.sbatch(f"--export=ALL,CLUSTER_SETUP={missing}", TRAIN, DEMO, cwd=tmp_path)
    info = slurm_cluster.wait(job, timeout=120)
    log = (tmp_path / f"slurm-train-{job}.out").read_text()
    assert info["JobState"] == "FAILED" and info["ExitCode"] == "2:0", log
    assert log == f"train.sbatch: error: CLUSTER_SETUP={missing} not found\n"


def test_e_signal_during_start_up_requeues_and_completes(slurm_cluster, shards: Path, tmp_path: Path) -> None:
    """USR1 to the batch step while its launcher checks the config, then to the tasks while they import
    torch: neither start has anything to save, each is requeued (never FAILED), the third one trains."""
    setup = tmp_path / "env.sh"  # the set-up hook (module load, conda activate …), sourced on every start
    setup.write_text('echo "env.sh sourced"\n')
    job = slurm_cluster.sbatch("-N2", "--ntasks-per-node=1", "--cpus-per-task=1", f"--export=ALL,CLUSTER_SETUP={setup}",
                               TRAIN, DEMO, *small(shards), "--trainer.max_epochs", "1", cwd=tmp_path)
    log = tmp_path / f"slurm-train-{job}.out"
    catching(job, "pipeline.commands.launch", 1, timeout=120)
    slurm_cluster.run("scancel", "-b", "--signal=USR1", str(job))  # the batch step only: no srun step yet
    wait_for(log, f"pipeline launch: SIGUSR1 before training started: requeued SLURM job {job}", 1, timeout=120)
    catching(job, "pipeline.cli", 2, timeout=120)  # both tasks of the second start, still importing torch
    slurm_cluster.run("scancel", "--signal=USR1", str(job))
    info = slurm_cluster.wait(job, timeout=300)
    text = log.read_text()
    assert info["JobState"] == "COMPLETED" and info["Restarts"] == "2", text[-5000:]
    assert "RequeueOnSignal: SIGUSR1 → nothing trained in this start yet, nothing to save" in text
    assert "User defined signal" not in text and text.count(f"requeued SLURM job {job}") == 2, text[-5000:]
    run_dir = only(list((tmp_path / "runs" / "demo").glob(f"compound-phi0-j{job}-*")))
    restarts = [line.split(" restart ")[1][0] for line in (run_dir / "slurm.log").read_text().splitlines()
                if " restart " in line]  # each start's line (the others say how it ended)
    assert restarts == ["0", "1", "2"]  # every start used the same run directory
    assert text.count("env.sh sourced") == 3
    assert global_step(run_dir) == BATCHES  # the third start trained the whole (one-epoch) run
