"""Must-show: a small scaled model trains with 2 gloo ranks (real Lightning DDP on CPU) on real digits shards,
is resumed from its last checkpoint with ``--ckpt_path last`` and continues from the same global step, with
optimizer, scheduler and EMA restored: it ends exactly where an uninterrupted run ends."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
import torch

from pipeline.training.checkpoint import load_checkpoint
from tests.training.conftest import DEMO_CONFIG, run_pipeline

SECRET = "wandb-key-sentinel-6f1d2c3b4a5e"
STEPS_PER_EPOCH = 3


def fit(digits: Path, root: Path, name: str, *extra: str) -> str:
    done = run_pipeline(
        "fit", "--config", str(DEMO_CONFIG), "--data.root", str(digits), "--run.root", str(root), "--run.name", name,
        # a narrow EfficientNet (Dollár "w" strategy at s = 1/4: width × 0.5) without dropout / drop-path, so that
        # the resumed and the uninterrupted runs can be compared bit for bit
        "--model.phi", "null", "--model.strategy", "w", "--model.scale", "0.25",
        "--model.dropout", "0", "--model.drop_path", "0", "--data.batch_size", "16",
        "--trainer.max_epochs", "2", "--trainer.limit_train_batches", str(STEPS_PER_EPOCH),
        "--trainer.limit_val_batches", "2", "--trainer.log_every_n_steps", "1", *extra,
        cwd=root, env={"WANDB_API_KEY": SECRET},
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done.stdout + done.stderr


def train_steps(run: Path) -> list[int]:
    with (run / "metrics.csv").open() as f:
        return [int(row["step"]) for row in csv.DictReader(f) if row.get("train/loss_step")]


@pytest.mark.slow
def test_resume_continues_from_the_same_step_and_matches_an_uninterrupted_run(digits: Path, tmp_path: Path) -> None:
    fit(digits, tmp_path, "whole")
    fit(digits, tmp_path, "resumed", "--trainer.max_steps", str(STEPS_PER_EPOCH))  # stops after epoch 0
    run = tmp_path / "demo" / "resumed"
    first = load_checkpoint(run / "checkpoints" / "last.ckpt")
    assert first["global_step"] == STEPS_PER_EPOCH and first["epoch"] == 0
    assert any(k.startswith("ema.module.") for k in first["state_dict"])
    assert train_steps(run) == list(range(STEPS_PER_EPOCH))
    wandb_id = (run / "wandb_id").read_text().strip()

    log = fit(digits, tmp_path, "resumed", "--ckpt_path", "last")
    assert "Restoring states from the checkpoint path at" in log and "last.ckpt" in log
    # the CSV logger appends: steps 0..2 from the first attempt, then 3..5, none repeated
    assert train_steps(run) == list(range(2 * STEPS_PER_EPOCH))

    resumed = load_checkpoint(run / "checkpoints" / "last.ckpt")
    whole = load_checkpoint(tmp_path / "demo" / "whole" / "checkpoints" / "last.ckpt")
    assert resumed["global_step"] == whole["global_step"] == 2 * STEPS_PER_EPOCH and resumed["epoch"] == 1
    opt_state = resumed["optimizer_states"][0]["state"]
    assert all(int(s["step"]) == 2 * STEPS_PER_EPOCH for s in opt_state.values())  # AdamW moments carried over
    assert resumed["lr_schedulers"][0] == whole["lr_schedulers"][0]
    for key, value in whole["state_dict"].items():  # model and EMA weights, BN statistics
        assert torch.allclose(resumed["state_dict"][key].float(), value.float(), rtol=1e-5, atol=1e-6), key

    # one W&B run across both attempts, and no credential written anywhere in the run directory
    assert (run / "wandb_id").read_text().strip() == wandb_id
    wandb_files = sorted(run.glob("wandb/offline-run-*/run-*.wandb"))
    assert len(wandb_files) == 2 and all(p.name == f"run-{wandb_id}.wandb" for p in wandb_files)
    for path in run.rglob("*"):
        assert not path.is_file() or SECRET.encode() not in path.read_bytes(), path
    assert (run / "result.json").is_file() and (run / "config.yaml").is_file()
