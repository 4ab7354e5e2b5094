"""A run directory holds one run: a fit with another config, or one that would overwrite a finished run, is
refused before it touches anything; ``--ckpt_path last`` resumes the same run and may only extend it."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch
import yaml

from pipeline import cli
from pipeline.training.checkpoint import load_checkpoint
from tests.training.conftest import DEMO_CONFIG, REPO, run_pipeline

pytestmark = pytest.mark.slow

SMALL = ("--model.phi", "null", "--model.strategy", "w", "--model.scale", "0.25", "--trainer.devices", "1",
         "--trainer.strategy", "auto", "--trainer.max_epochs", "1", "--trainer.limit_train_batches", "3",
         "--trainer.limit_val_batches", "2", "--data.batch_size", "16")


def fit_args(digits: Path, root: Path, *extra: str) -> list[str]:
    """A one-rank, three-step fit of a narrow EfficientNet into ``root/demo/run``."""
    return ["fit", "--config", str(DEMO_CONFIG), "--data.root", str(digits), "--run.root", str(root),
            "--run.name", "run", *SMALL, *extra]


def snapshot(directory: Path) -> dict[str, bytes]:
    """Every file under ``directory`` (W&B files included) and its bytes."""
    return {str(p.relative_to(directory)): p.read_bytes() for p in sorted(directory.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def finished(digits: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The root of a finished one-epoch run ``demo/run``."""
    root = tmp_path_factory.mktemp("integrity")
    done = run_pipeline(*fit_args(digits, root), cwd=root)
    assert done.returncode == 0, done.stderr[-3000:]
    assert (root / "demo" / "run" / "result.json").is_file()
    return root


@pytest.mark.parametrize(("extra", "message"), [
    ((), "already holds a run (result.json, best.ckpt, last.ckpt) that this fit would overwrite; give this run its "
         "own --run.name or --run.sweep, or resume the stored run unchanged with --ckpt_path last"),
    (("--model.recipe.lr_per_256", "0.01"), "holds a run with another config (model.recipe.lr_per_256: 0.008 → 0.01)"),
    (("--model.recipe.lr_per_256", "0.01", "--ckpt_path", "last"), "model.recipe.lr_per_256: 0.008 → 0.01"),
    (("--data.batch_size", "8", "--data.num_workers", "1", "--ckpt_path", "last", "--seed_everything", "1"),
     "(data.batch_size: 16 → 8; data.num_workers: 0 → 1; seed_everything: 0 → 1)"),
])
def test_a_fit_that_would_mix_or_overwrite_runs_is_refused_and_touches_nothing(
    extra: tuple[str, ...], message: str, finished: Path, digits: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    before = snapshot(finished)
    capfd.readouterr()
    assert cli.main(fit_args(digits, finished, *extra)) == 2
    err = capfd.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"pipeline fit: error: {finished}/demo/run ") and message in err[0], err
    assert snapshot(finished) == before


def test_a_resume_may_extend_training_and_records_it(finished: Path, digits: Path, tmp_path: Path) -> None:
    root = tmp_path / "copy"
    shutil.copytree(finished, root)
    run = root / "demo" / "run"
    assert load_checkpoint(run / "checkpoints" / "last.ckpt")["global_step"] == 3
    done = run_pipeline(*fit_args(digits, root, "--ckpt_path", "last", "--trainer.max_epochs", "2"), cwd=root)
    assert done.returncode == 0, done.stderr[-3000:]
    assert load_checkpoint(run / "checkpoints" / "last.ckpt")["global_step"] == 6
    assert yaml.safe_load((run / "config.yaml").read_text())["trainer"]["max_epochs"] == 2
    # shortening it again is not a resume of the same run
    done = run_pipeline(*fit_args(digits, root, "--ckpt_path", "last"), cwd=root)
    assert done.returncode == 2 and done.stderr.strip().splitlines()[-1].endswith(
        "(trainer.max_epochs: 2 → 1); give this run its own --run.name or --run.sweep, or resume the stored run "
        "unchanged with --ckpt_path last")


def test_a_crash_mid_epoch_resumes_from_the_time_based_checkpoint(digits: Path, tmp_path: Path) -> None:
    """last.ckpt every 0.1 s of training: a process killed after step 7 of a 12-step epoch left a mid-epoch
    checkpoint (not only the epoch start), and the resume from it ends with the uninterrupted run's weights."""
    crash = ("--trainer.callbacks+=tests.crash.CrashAt", "--run.checkpoint_every_min", "0.0017",
             "--trainer.limit_train_batches", "12", "--data.batch_size", "8")
    env = {"PYTHONPATH": str(REPO)}
    whole, broken = tmp_path / "whole", tmp_path / "broken"
    done = run_pipeline(*fit_args(digits, whole, *crash), cwd=tmp_path, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    killed = run_pipeline(*fit_args(digits, broken, *crash), cwd=tmp_path, env={**env, "CRASH_AT_STEP": "7"})
    assert killed.returncode == -9
    last = broken / "demo" / "run" / "checkpoints" / "last.ckpt"
    assert 0 < load_checkpoint(last)["global_step"] <= 7  # written mid-epoch, before the crash
    done = run_pipeline(*fit_args(digits, broken, *crash, "--ckpt_path", "last"), cwd=tmp_path, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    resumed, uninterrupted = (load_checkpoint(root / "demo" / "run" / "checkpoints" / "last.ckpt")
                              for root in (broken, whole))
    assert resumed["global_step"] == uninterrupted["global_step"] == 12
    for key, value in uninterrupted["state_dict"].items():
        assert torch.equal(resumed["state_dict"][key], value), key
