"""Must-show: a small scaled model trains with 2 gloo ranks (real Lightning DDP on CPU, 2 loader workers per
rank) on real digits shards, is stopped in the middle of an epoch by a real requeue signal (the cluster
package's ``RequeueOnSignal`` saves ``last.ckpt`` at that batch end), is resumed with ``--ckpt_path last`` and
continues from the same global step and the same batch of the epoch — optimizer, scheduler, EMA and the
train loader's position restored — ending bit-identical to the uninterrupted run, in the same W&B run, with
no credential written anywhere."""

from __future__ import annotations

import csv
import json
import os
import signal
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import pytorch_lightning as pl
import torch

from pipeline.training.checkpoint import load_checkpoint
from tests.training.conftest import DEMO_CONFIG, REPO, run_pipeline

SECRET = "wandb-key-sentinel-6f1d2c3b4a5e"
STEPS_PER_EPOCH = 4
STOP = STEPS_PER_EPOCH + 1  # the second batch of epoch 1: mid-epoch, and an odd batch for 2 loader workers

pytestmark = pytest.mark.slow


@dataclass
class Runs:
    whole: Path  # two epochs in one go
    resumed: Path  # stopped after STOP steps, then resumed
    first: dict  # resumed's last.ckpt after its first attempt
    wandb_id: str
    resume_log: str


def fit(digits: Path, root: Path, name: str, *extra: str) -> str:
    done = run_pipeline(
        "fit", "--config", str(DEMO_CONFIG), "--data.root", str(digits), "--run.root", str(root), "--run.name", name,
        # a narrow EfficientNet (Dollár "w" strategy at s = 1/4: width × 0.5) with dropout and drop-path on: the
        # resumed run must draw the same masks as the uninterrupted one (per-batch seeds), bit for bit
        "--model.phi", "null", "--model.strategy", "w", "--model.scale", "0.25",
        "--model.dropout", "0.2", "--model.drop_path", "0.2", "--data.batch_size", "16", "--data.num_workers", "2",
        "--trainer.max_epochs", "2", "--trainer.limit_train_batches", str(STEPS_PER_EPOCH),
        "--trainer.limit_val_batches", "2", "--trainer.log_every_n_steps", "1", *extra,
        cwd=root, env={"WANDB_API_KEY": SECRET, "PYTHONPATH": str(REPO)},
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done.stdout + done.stderr


class SignalAtStep(pl.Callback):
    """Sends this process the requeue signal (USR1) at the end of global step ``step`` (every rank does)."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_end(self, trainer: pl.Trainer, *args: Any) -> None:
        """Signal once, when the step is reached (a resumed run starts past it)."""
        if trainer.global_step == self.step:
            os.kill(os.getpid(), signal.SIGUSR1)


@pytest.fixture(scope="module")
def runs(digits: Path, tmp_path_factory: pytest.TempPathFactory) -> Runs:
    root = tmp_path_factory.mktemp("resume")
    fit(digits, root, "whole")
    # the same command twice, as a requeued job runs it: the signal comes once, at step STOP
    stop = ["--trainer.callbacks+", json.dumps({"class_path": f"{__name__}.SignalAtStep", "init_args": {"step": STOP}}),
            "--trainer.callbacks+", "pipeline.training.requeue.RequeueOnSignal"]
    fit(digits, root, "resumed", *stop)
    resumed = root / "demo" / "resumed"
    first = load_checkpoint(resumed / "checkpoints" / "last.ckpt")
    assert not (resumed / "result.json").exists()  # stopped, not finished
    wandb_id = (resumed / "wandb_id").read_text().strip()
    log = fit(digits, root, "resumed", *stop, "--ckpt_path", "last")
    return Runs(root / "demo" / "whole", resumed, first, wandb_id, log)


def train_steps(run: Path) -> list[int]:
    with (run / "metrics.csv").open() as f:
        return [int(row["step"]) for row in csv.DictReader(f) if row.get("train/loss_step")]


def test_resume_continues_from_the_same_step_with_optimizer_scheduler_and_ema(runs: Runs) -> None:
    assert runs.first["global_step"] == STOP and runs.first["epoch"] == 1
    # the train loader's position: epoch 1, one batch in (Lightning keeps it with the fit loop's state)
    assert runs.first["loops"]["fit_loop"]["state_dict"]["combined_loader"] == [{"epoch": 1, "batches": 1}]
    assert "dataloader is not resumable" not in runs.resume_log
    assert any(k.startswith("ema.module.") for k in runs.first["state_dict"])
    assert "Restoring states from the checkpoint path at" in runs.resume_log and "last.ckpt" in runs.resume_log
    # metrics.csv is appended to: the first attempt's steps, then the rest, none repeated. The row of the step
    # the signal stopped at is missing: RequeueOnSignal stops in on_train_batch_end, before Lightning hands
    # that step's logged values to the loggers (a cluster-package matter; the step itself is trained and saved)
    steps = train_steps(runs.resumed)
    assert steps == [s for s in range(2 * STEPS_PER_EPOCH) if s != STOP - 1]
    resumed = load_checkpoint(runs.resumed / "checkpoints" / "last.ckpt")
    whole = load_checkpoint(runs.whole / "checkpoints" / "last.ckpt")
    assert resumed["global_step"] == whole["global_step"] == 2 * STEPS_PER_EPOCH
    opt_state = resumed["optimizer_states"][0]["state"]
    assert all(int(s["step"]) == 2 * STEPS_PER_EPOCH for s in opt_state.values())  # AdamW moments carried over
    assert resumed["lr_schedulers"][0] == whole["lr_schedulers"][0]  # timm scheduler state
    # lr_per_256 × global batch (16 per rank × 2 ranks) / 256
    assert resumed["optimizer_states"][0]["param_groups"][0]["initial_lr"] == pytest.approx(0.008 * 32 / 256)
    ema = [k for k in resumed["state_dict"] if k.startswith("ema.module.")]
    moved = [k for k in ema if not torch.equal(resumed["state_dict"][k], runs.first["state_dict"][k])]
    assert moved  # the EMA kept averaging after the resume


def test_one_wandb_run_and_no_credentials(runs: Runs) -> None:
    assert (runs.resumed / "wandb_id").read_text().strip() == runs.wandb_id
    wandb_files = sorted(runs.resumed.glob("wandb/offline-run-*/run-*.wandb"))
    assert len(wandb_files) == 2 and all(p.name == f"run-{runs.wandb_id}.wandb" for p in wandb_files)
    for path in runs.resumed.rglob("*"):
        assert not path.is_file() or SECRET.encode() not in path.read_bytes(), path
    assert (runs.resumed / "result.json").is_file() and (runs.resumed / "config.yaml").is_file()


def test_resumed_run_is_bit_exact_with_the_uninterrupted_run(runs: Runs) -> None:
    resumed = load_checkpoint(runs.resumed / "checkpoints" / "last.ckpt")["state_dict"]
    whole = load_checkpoint(runs.whole / "checkpoints" / "last.ckpt")["state_dict"]
    for key, value in whole.items():  # model and EMA weights, BN statistics
        assert torch.equal(resumed[key], value), key
