"""A diverging run stops at its first non-finite step on every rank: one error line naming the step, a non-zero
exit, no result.json, and the checkpoints of the last good epoch left exactly as they were.

The divergence is made deterministic with the step schedule: ``decay_rate`` 1e30 after one epoch multiplies the
lr by 1e30 from step 3 on, so epoch 0 (steps 0-2) trains normally, step 3 blows the weights up (finite, ~1e27)
and step 4's loss is NaN.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from pipeline.training.checkpoint import load_checkpoint
from tests.training.conftest import DEMO_CONFIG, run_pipeline

pytestmark = pytest.mark.slow

NARROW = ("--model.phi", "null", "--model.strategy", "w", "--model.scale", "0.25", "--model.dropout", "0",
          "--model.drop_path", "0", "--data.batch_size", "16", "--trainer.max_epochs", "2",
          "--trainer.limit_train_batches", "3", "--trainer.limit_val_batches", "2")
DIVERGES_IN_EPOCH_1 = ("--model.recipe.sched", "step", "--model.recipe.warmup_epochs", "0",
                       "--model.recipe.decay_epochs", "1", "--model.recipe.decay_rate", "1e30")
LOSS_AT_STEP_4 = ("pipeline fit: error: non-finite loss at step 4 (epoch 1); stopped on every rank before updating "
                  "the weights, checkpoints left as they were and no result written; lower model.recipe.lr_per_256 "
                  "or check the data")


def fit(digits: Path, root: Path, name: str, *extra: str) -> tuple[int, list[str]]:
    """Exit status and error lines of a 2-rank DDP fit of ``root/demo/name``."""
    done = run_pipeline("fit", "--config", str(DEMO_CONFIG), "--data.root", str(digits), "--run.root", str(root),
                        "--run.name", name, *NARROW, *extra, cwd=root, timeout=400)
    errors = [line for line in done.stderr.splitlines() if "error" in line.lower() or "Traceback" in line]
    return done.returncode, errors


def fit_each_rank(digits: Path, root: Path, name: str, *extra: str) -> list[tuple[int, list[str]]]:
    """Exit status and error lines of each rank of a 2-rank fit whose ranks are started separately, as srun starts
    them (``LOCAL_RANK`` set: Lightning launches nothing and no rank can kill another, each must stop itself)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    args = [sys.executable, "-m", "pipeline.cli", "fit", "--config", str(DEMO_CONFIG), "--data.root", str(digits),
            "--run.root", str(root), "--run.name", name, *NARROW, *extra]
    procs, logs = [], []
    for rank in (0, 1):
        env = {**os.environ, "WANDB_MODE": "offline", "PYTHONWARNINGS": "ignore", "LOCAL_RANK": str(rank),
               "NODE_RANK": "0", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)}
        logs.append(root / f"rank{rank}.err")
        with logs[-1].open("w") as err:  # files, not pipes: a full pipe would stall a rank inside a collective
            procs.append(subprocess.Popen(args, cwd=root, env=env, stdout=subprocess.DEVNULL, stderr=err))
    codes = [p.wait(timeout=400) for p in procs]
    return [(code, [line for line in log.read_text().splitlines() if "error" in line.lower() or "Traceback" in line])
            for code, log in zip(codes, logs, strict=True)]


def files(run: Path) -> dict[str, bytes]:
    """Checkpoints and result record of ``run`` with their bytes."""
    paths = [*sorted((run / "checkpoints").glob("*")), run / "result.json"]
    return {p.name: p.read_bytes() for p in paths if p.is_file()}


@pytest.fixture(scope="module")
def epoch0(digits: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The root of run ``good``: epoch 0 of the diverging config, stopped by max_steps before the bad lr."""
    root = tmp_path_factory.mktemp("nonfinite")
    rc, errors = fit(digits, root, "good", *DIVERGES_IN_EPOCH_1, "--trainer.max_steps", "3")
    assert rc == 0, errors
    return root


def test_resumed_run_that_diverges_leaves_its_files_as_they_were(epoch0: Path, digits: Path) -> None:
    run = epoch0 / "demo" / "good"
    before = files(run)
    assert set(before) == {"last.ckpt", "best.ckpt", "result.json"}
    rc, errors = fit(digits, epoch0, "good", *DIVERGES_IN_EPOCH_1, "--ckpt_path", "last")
    assert rc == 2 and errors == [LOSS_AT_STEP_4]  # one line from both ranks, no traceback
    assert files(run) == before  # bytes unchanged


def test_diverging_run_stops_every_rank_keeps_the_last_good_epoch_and_writes_no_result(
    epoch0: Path, digits: Path
) -> None:
    # each rank stops by itself at the same step: rank 0 says so (exit 2), rank 1 exits 1 quietly, none hangs
    assert fit_each_rank(digits, epoch0, "bad", *DIVERGES_IN_EPOCH_1) == [(2, [LOSS_AT_STEP_4]), (1, [])]
    run = epoch0 / "demo" / "bad"
    assert not (run / "result.json").exists()
    last = load_checkpoint(run / "checkpoints" / "last.ckpt")
    good = load_checkpoint(epoch0 / "demo" / "good" / "checkpoints" / "last.ckpt")
    assert last["global_step"] == 3 and last["epoch"] == 0
    for key, value in good["state_dict"].items():  # the weights of the last good epoch, bit for bit
        assert torch.equal(last["state_dict"][key], value), key
    assert (run / "checkpoints" / "best.ckpt").is_file()


def test_non_finite_weights_are_never_checkpointed(digits: Path, tmp_path: Path) -> None:
    # SGD at lr 3.3e38 from step 2 (the last of epoch 0) overflows the weights to inf while step 2's loss was
    # finite; the epoch-end checkpoint is then refused, so the run has no checkpoint at all
    rc, errors = fit(digits, tmp_path, "inf", "--trainer.devices", "1", "--trainer.strategy", "auto",
                     "--model.recipe.opt", "sgd", "--model.recipe.opt_kwargs", "{}", "--model.recipe.sched", "step",
                     "--model.recipe.warmup_epochs", "0", "--model.recipe.decay_epochs", "0.66",
                     "--model.recipe.decay_rate", "3.3e41")
    assert rc == 2 and errors == [
        "pipeline fit: error: non-finite weights after step 2 (model.conv_stem.weight); stopped on every rank "
        "without writing the checkpoint, checkpoints left as they were and no result written; lower "
        "model.recipe.lr_per_256 or check the data"]
    run = tmp_path / "demo" / "inf"
    assert files(run) == {} and (run / "config.yaml").is_file()
