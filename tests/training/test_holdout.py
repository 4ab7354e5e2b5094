"""Select on held-out data, report on the test split (issue 17): a fit's record ``top1`` is its best.ckpt (chosen
on ``data.val_split``) evaluated once on ``data.test_split``, exactly what a separate ``pipeline test`` prints."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from pipeline import cli
from pipeline.commands import results
from pipeline.data.holdout import Holdout
from pipeline.data.sharding import write_shards
from pipeline.data.sources import get_source
from pipeline.training.result import RESULT_KEYS
from tests.training.conftest import DEMO_CONFIG, run_pipeline
from tests.training.test_demo_wandb import read_wandb_run

# 2 DDP ranks on CPU (the demo's), precise BN on: the statistics a separate test recomputes must be the same
SMALL = ("--model.phi", "null", "--model.strategy", "w", "--model.scale", "0.25", "--trainer.max_epochs", "2",
         "--trainer.limit_train_batches", "4", "--data.batch_size", "16", "--run.precise_bn_samples", "64")


@pytest.fixture(scope="module")
def held(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Digits shards with 200 training samples held out as minival."""
    out = tmp_path_factory.mktemp("held")
    write_shards(get_source("digits", None), out, holdout=Holdout(200))
    return out


def test_selecting_on_a_split_the_shards_lack_says_how_to_make_it(
    digits: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["fit", "--config", str(DEMO_CONFIG), "--data.root", str(digits), "--run.root", str(tmp_path / "runs"),
            *SMALL]
    assert cli.main([*argv, "--data.val_split", "minival"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"{digits} has no split 'minival': re-shard with `pipeline shards digits … --holdout N`" \
        in err[0], err
    assert cli.main([*argv, "--data.test_split", "null"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "a fit reports its selected checkpoint on data.test_split" in err[0], err
    assert not (tmp_path / "runs").exists()


@pytest.mark.slow
def test_record_top1_is_a_separate_test_of_the_selected_checkpoint_on_the_reported_split(
    held: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Must show (issue 17): result.json's top1 / top1_ema equal ``pipeline test --ckpt_path best.ckpt`` exactly."""
    fit = run_pipeline("fit", "--config", str(DEMO_CONFIG), "--data.root", str(held), "--run.root", str(tmp_path),
                       "--run.name", "run", "--data.val_split", "minival", *SMALL, cwd=tmp_path)
    assert fit.returncode == 0, fit.stderr[-3000:]
    run = tmp_path / "demo" / "run"
    record = json.loads((run / "result.json").read_text())
    assert set(RESULT_KEYS) <= set(record)
    assert (record["selected_on"], record["reported_on"]) == ("minival", "test")
    assert (record["val_images"], record["test_images"], record["world_size"]) == (200, 180, 2)
    assert record["reported_checkpoint"] == str(run / "checkpoints" / "best.ckpt")
    assert record["precise_bn_samples"] == 64 and record["val_top1"] is not None

    test = run_pipeline("test", "--config", str(run / "config.yaml"), "--ckpt_path", record["reported_checkpoint"],
                        "--run.name", "tested", cwd=tmp_path)
    assert test.returncode == 0, test.stderr[-3000:]
    with (tmp_path / "demo" / "tested" / "metrics.csv").open() as f:
        (row,) = list(csv.DictReader(f))
    for key in ("top1", "top5", "top1_ema", "top5_ema"):
        assert record[key] == float(row[f"test/{key}"]), key  # the same fraction, not merely close
        assert f"test/{key}" in test.stdout
    (wandb_file,) = run.glob("wandb/offline-run-*/run-*.wandb")
    summary = read_wandb_run(wandb_file)["summary"]
    assert summary["test/top1"] == pytest.approx(record["top1"]) and summary["top1"] == pytest.approx(record["top1"])
    assert summary["val_top1"] == pytest.approx(record["val_top1"]) and summary["reported_on"] == "test"
    # the fit's own test logged the same numbers beside its epochs
    with (run / "metrics.csv").open() as f:
        tested = [r for r in csv.DictReader(f) if r.get("test/top1")]
    assert [float(r["test/top1"]) for r in tested] == [record["top1"]]

    capsys.readouterr()
    assert results.main(["results", str(tmp_path / "demo" / "run")]) == 0
    header, _, row = capsys.readouterr().out.splitlines()
    columns = dict(zip(header.split(), row.split(), strict=True))
    assert (columns["selected_on"], columns["reported_on"]) == ("minival", "test")
    assert columns["top1"] == f"{100 * record['top1']:.1f}%"
    assert columns["val_top1"] == f"{100 * record['val_top1']:.1f}%"


@pytest.mark.slow
def test_selecting_on_the_reported_split_still_runs_and_says_so(digits: Path, tmp_path: Path) -> None:
    fit = run_pipeline("fit", "--config", str(DEMO_CONFIG), "--data.root", str(digits), "--run.root", str(tmp_path),
                       "--run.name", "run", "--data.val_split", "test", "--trainer.devices", "1",
                       "--trainer.strategy", "auto", *SMALL, cwd=tmp_path)
    assert fit.returncode == 0, fit.stderr[-3000:]
    assert "data.val_split and data.test_split are both 'test'" in fit.stderr
    record = json.loads((tmp_path / "demo" / "run" / "result.json").read_text())
    assert record["selected_on"] == record["reported_on"] == "test" and record["val_images"] == 180


@pytest.mark.slow
def test_a_fit_that_never_validated_reports_its_final_weights(digits: Path, tmp_path: Path) -> None:
    fit = run_pipeline("fit", "--config", str(DEMO_CONFIG), "--data.root", str(digits), "--run.root", str(tmp_path),
                       "--run.name", "run", "--trainer.devices", "1", "--trainer.strategy", "auto", *SMALL,
                       "--trainer.limit_val_batches", "0", cwd=tmp_path)
    assert fit.returncode == 0, fit.stderr[-3000:]
    assert "no validation ran, so no checkpoint was selected on 'val': reporting the final weights" in fit.stderr
    record = json.loads((tmp_path / "demo" / "run" / "result.json").read_text())
    assert (record["selected_on"], record["reported_on"], record["reported_checkpoint"]) == (None, "test", None)
    assert record["val_top1"] is None and 0 <= record["top1"] <= 1 and record["test_images"] == 180
    assert not (tmp_path / "demo" / "run" / "checkpoints" / "best.ckpt").exists()
