"""An invalid config is refused before any run directory, W&B run or process group exists: one line on
stderr, exit status 2, no traceback."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
import torch.distributed as dist

from pipeline import cli
from tests.training.conftest import DEMO_CONFIG, run_pipeline

NO_GPU = pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU machine accepts accelerator=gpu")


class Unlisted:
    """Not a safe global: a checkpoint holding one holds pickled code."""


@pytest.mark.parametrize(("override", "message"), [
    (["--model.foo", "1"], "unrecognized arguments: --model.foo"),
    (["--model.phi", "abc"], 'Parser key "model.phi"'),
    (["--model.phi", "-1"], "phi must be >= 0"),
    (["--model.alpha", "0.5"], "alpha must be >= 1"),
    (["--model.variant", "b3"], "give exactly one of variant"),
    (["--model.recipe.lr_per_256", "-1"], "recipe.lr_per_256 must be > 0"),
    (["--model.recipe.bn_momentum", "0.99"], "TF's 0.99"),
    (["--run.name", "a/b"], "run.name must be a plain directory name"),
    (["--trainer.max_epochs", "0"], "trainer.max_epochs and trainer.max_steps must be ≥ 1"),
    (["--trainer.max_steps", "0"], "got max_epochs=6, max_steps=0"),
    (["--trainer.max_steps", "-5"], "`max_steps` must be a non-negative integer or -1"),
    (["--trainer.max_epochs", "-1"], "never ends and the lr schedule needs a length"),
    (["--trainer.limit_train_batches", "0"], "trainer.limit_train_batches must be > 0"),
    (["--trainer.accumulate_grad_batches", "0"], "trainer.accumulate_grad_batches must be ≥ 1"),
    (["--trainer.check_val_every_n_epoch", "0"], "trainer.check_val_every_n_epoch must be ≥ 1"),
    (["--model.recipe.opt", "nosuchopt"], "recipe.opt 'nosuchopt' is not a timm optimizer"),
    (["--model.recipe.opt", "adamww"], "did you mean adamw"),
    (["--model.recipe.opt_kwargs", '{"betas": 0.9}'], "recipe.opt 'adamw' with opt_kwargs"),
    (["--model.recipe.sched", "nosuch"], "recipe.sched 'nosuch': Unknown scheduler 'nosuch'"),
    (["--data.batch_size", "5000"], "1437 samples, fewer than world size 2 × batch size 5000"),
    (["--trainer.devices", "181", "--data.batch_size", "1"], "leaves rank 180 with nothing to evaluate"),
    (["--trainer.devices", "0"], "`Trainer(devices='0')` value is not a valid input"),
    (["--trainer.precision", "bogus"], 'Parser key "trainer.precision"'),
    (["--trainer.strategy", "bogus"], "invalid strategy name: `strategy='bogus'`"),
    pytest.param(["--trainer.accelerator", "gpu"], "No supported gpu backend found", marks=NO_GPU),
    (["--trainer.num_nodes", "0"], "`num_nodes` must be a positive integer, but got 0"),
    (["--trainer.max_time", "bogus"], "`Timer(duration='bogus')` is not a valid duration"),
    (["--trainer.limit_val_batches", "-1"], "for limit_val_batches, it has to be in [0.0, 1.0] or an int"),
    (["--trainer.val_check_interval", "0"], "trainer.val_check_interval must be > 0"),
    (["--trainer.gradient_clip_val", "-1"], "trainer.gradient_clip_val must be ≥ 0"),
    (["--run.monitor", "val/loss"], "run.monitor 'val/loss' is not an accuracy this run logs"),
    (["--run.monitor", "val/top1_ema", "--model.recipe.ema_epochs", "null"], "use one of val/top1, val/top5"),
    (["--data.interpolation", "bogus"], "timm refuses the train transform (data.interpolation 'bogus'"),
    (["--data.auto_augment", "bogus"], "AssertionError: Unknown AA policy bogus"),
    (["--ckpt_path", "/nonexistent.ckpt"], "checkpoint /nonexistent.ckpt does not exist"),
    (["--ckpt_path", "best"], "ckpt_path 'best' is not supported"),
    (["--config", "/nonexistent.yaml"], "File does not exist: '/nonexistent.yaml'"),
])
def test_bad_configs_are_one_line_errors(
    override: list[str], message: str, digits: Path, tmp_path: Path, capfd: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.chdir(tmp_path)  # where W&B would put a wandb/ directory
    argv = ["fit", "--config", str(DEMO_CONFIG), "--data.root", str(digits), "--run.root", str(tmp_path / "runs"),
            *override]
    assert cli.main(argv) == 2
    err = capfd.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("pipeline fit: error: ") and message in err[0], err
    assert not dist.is_initialized()
    assert os.listdir(tmp_path) == []  # no run directory, no wandb/ directory: nothing at all


@pytest.mark.parametrize(("content", "message"), [
    (lambda path: torch.save({"state_dict": {}, "obj": Unlisted()}, path),
     "is refused by weights_only loading (Unsupported global: GLOBAL tests.training.test_cli_errors.Unlisted"),
    (lambda path: path.write_bytes(b"PK\x03\x04 truncated"), "cannot be read: PytorchStreamReader failed"),
])
def test_unsafe_or_broken_checkpoints_are_one_line_errors(
    content: Callable[[Path], object], message: str, digits: Path, tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    ckpt = tmp_path / "given.ckpt"
    content(ckpt)
    argv = ["fit", "--config", str(DEMO_CONFIG), "--data.root", str(digits), "--run.root", str(tmp_path / "runs"),
            "--ckpt_path", str(ckpt)]
    assert cli.main(argv) == 2
    err = capfd.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"pipeline fit: error: checkpoint {ckpt} {message}"), err
    assert os.listdir(tmp_path) == ["given.ckpt"]


def test_missing_data_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["fit", "--config", str(DEMO_CONFIG), "--data.root", str(tmp_path / "none"), "--run.root", str(tmp_path)]
    assert cli.main(argv) == 2
    assert "pipeline fit: error:" in capsys.readouterr().err


def test_refusal_from_the_command_line_has_no_traceback(digits: Path, tmp_path: Path) -> None:
    done = run_pipeline("fit", "--config", str(DEMO_CONFIG), "--data.root", str(digits),
                        "--run.root", str(tmp_path / "runs"), "--data.batch_size", "5000", cwd=tmp_path, timeout=120,
                        env={"PYTHONWARNINGS": "default"})  # warnings shown: they too are held until the checks pass
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        "pipeline fit: error: train split 'train' has 1437 samples, fewer than world size 2 × batch size 5000; "
        "lower data.batch_size"]
    assert os.listdir(tmp_path) == []
