"""Transfer learning end to end: a source run trained here, fine-tuned on CIFAR-100 and Flowers-102 files.

The targets are scikit-learn's digits written in CIFAR-100's pickle format and Flowers-102's jpg/mat format,
sharded by ``pipeline shards``, fine-tuned with ``configs/transfer/*.yaml``. Bad sources are refused in one
line before any run directory exists.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch
import torch.distributed as dist

from pipeline import cli
from pipeline.data.shard_manifest import load_manifest
from pipeline.training.module import ScaledClassifier
from tests.training.conftest import DEMO_CONFIG, REPO, run_pipeline
from tests.training.transfer_data import write_digits_as_cifar100, write_digits_as_flowers

pytestmark = pytest.mark.slow

# the source: a Dollár-scaled net (width × ½, flops × ¼) at 32 px, 3 epochs of the demo recipe, one process
SOURCE_SPEC = ["--model.phi", "null", "--model.strategy", "w", "--model.scale", "0.25", "--model.base_resolution", "32"]
ONE_PROCESS = ["--trainer.accelerator", "cpu", "--trainer.devices", "1", "--trainer.strategy", "auto",
               "--data.num_workers", "0", "--trainer.enable_progress_bar", "false"]
# the transfer configs' protocol at the scale of a test: 2 epochs of ~45 updates instead of thousands, so no
# warm-up, a higher lr, PyTorch's BN momentum (0.01 averages over ~100 updates) and a short EMA; digits'
# augmentation (as configs/data/digits.yaml: no crops of 8×8 strokes, no mirrored digits). With the
# configs' crops and flips, 2 epochs reach 28 % instead of 88 % (measured for φ = 0).
TINY_SCHEDULE = ["--trainer.max_epochs", "2", "--data.batch_size", "32", "--data.auto_augment", "null",
                 "--data.scale=[1.0, 1.0]", "--data.hflip", "0", "--data.crop_pct", "1.0",
                 "--model.recipe.lr_per_256", "0.08", "--model.recipe.warmup_epochs", "0",
                 # an EMA horizon of 0.22 epochs: ≈ 0.9 per update at 45 updates per epoch
                 "--model.recipe.bn_momentum", "null", "--model.recipe.ema_epochs", "0.22",
                 # precise BN on 512 train images before each evaluation, not the configs' 8,192 (every train image)
                 "--run.precise_bn_samples", "512"]


@pytest.fixture(scope="module")
def source(digits: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished source run directory (digits, 10 classes)."""
    root = tmp_path_factory.mktemp("source")
    done = run_pipeline("fit", "--config", str(DEMO_CONFIG), "--data.root", str(digits), "--run.root", str(root),
                        "--run.sweep", "src", "--trainer.max_epochs", "3", *ONE_PROCESS, *SOURCE_SPEC, cwd=root)
    assert done.returncode == 0, done.stderr[-3000:]
    run = root / "src" / "w-s0.25"
    assert json.loads((run / "result.json").read_text())["top1"] > 0.3  # chance: 0.1
    return run


def fine_tune(dataset: str, shards: Path, source: Path, root: Path) -> dict:
    """``pipeline fit`` with the dataset's transfer config from ``source``; returns the result record."""
    done = run_pipeline("fit", "--config", str(REPO / "configs" / "transfer" / f"{dataset}.yaml"), *SOURCE_SPEC,
                        "--model.init_from", str(source), "--run.source_run", source.name, "--run.dataset", dataset,
                        "--data.root", str(shards), "--run.root", str(root), *ONE_PROCESS, *TINY_SCHEDULE,
                        cwd=root.parent)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads((root / "single" / f"w-s0.25-{dataset}" / "result.json").read_text())


def test_cifar100_fine_tune_and_predict(source: Path, tmp_path: Path) -> None:
    write_digits_as_cifar100(tmp_path / "src")
    done = run_pipeline("shards", "cifar100", "--src", str(tmp_path / "src"), "--out", str(tmp_path / "c100"),
                        "--holdout", "180", cwd=tmp_path)  # the config selects on minival
    assert done.returncode == 0, done.stderr
    result = fine_tune("cifar100", tmp_path / "c100", source, tmp_path / "runs")
    # 100 classes in the head, 10 used: chance is 10 % (measured: 73 % raw, 73 % EMA; the source: 33 %)
    assert result["top1"] > 0.45, result
    assert result["source_run"] == "w-s0.25" and result["dataset"] == "cifar100" and result["strategy"] == "w"

    run = tmp_path / "runs" / "single" / "w-s0.25-cifar100"
    wandb_runs = sorted((run / "wandb").glob("offline-run-*"))
    done = run_pipeline("predict", "--config", str(run / "config.yaml"), "--ckpt_path",
                        str(run / "checkpoints" / "best.ckpt"), "--out", str(tmp_path / "pred"),
                        "--trainer.enable_progress_bar", "false", cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    assert sorted((run / "wandb").glob("offline-run-*")) == wandb_runs  # predict logs nothing
    rows = [json.loads(line) for line in (tmp_path / "pred" / "predictions-test.jsonl").read_text().splitlines()]
    assert len(rows) == len({r["key"] for r in rows}) == 360 and all(len(r["top5"]) == 5 for r in rows)
    # top1 is best.ckpt (selected on minival) evaluated on test: predicting test with it gives the same accuracy
    assert sum(r["top5"][0] == r["label"] for r in rows) / len(rows) == pytest.approx(result["top1"], abs=1e-6)


def test_flowers102_fine_tune_on_trainval(source: Path, tmp_path: Path) -> None:
    write_digits_as_flowers(tmp_path / "src")
    done = run_pipeline("shards", "flowers102", "--src", str(tmp_path / "src"), "--out", str(tmp_path / "fl"),
                        "--holdout", "180", "--holdout-from", "trainval", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    counts = {name: split.count for name, split in load_manifest(tmp_path / "fl").splits.items()}
    assert counts == {"train": 1437, "val": 180, "test": 180, "trainval": 1437, "minival": 180}
    result = fine_tune("flowers102", tmp_path / "fl", source, tmp_path / "runs")
    assert result["top1"] > 0.45, result  # chance 10 % (measured: 58 %)
    assert result["dataset"] == "flowers102"


def test_the_source_weights_are_the_starting_point_and_a_probe_trains_only_the_head(source: Path) -> None:
    ckpt = source / "checkpoints" / "best.ckpt"
    spec = {"strategy": "w", "scale": 0.25, "base_resolution": 32}
    saved = torch.load(ckpt, weights_only=True)["state_dict"]
    for ema in (True, False):
        module = ScaledClassifier(**spec, num_classes=7, init_from=str(source), init_ema=ema)
        prefix = "ema.module." if ema else "model."
        for key, value in module.model.state_dict().items():
            if key.startswith("classifier."):
                assert value.shape[0] == 7  # the target's head, not the source's 10 classes
            else:
                assert torch.equal(value, saved[prefix + key]), key
        # the run's EMA starts from the loaded weights too
        assert torch.equal(module.ema.module.conv_stem.weight, module.model.conv_stem.weight)

    probe = ScaledClassifier(**spec, num_classes=7, init_from=str(ckpt), linear_probe=True).train()
    assert {n for n, p in probe.model.named_parameters() if p.requires_grad} == {"classifier.weight", "classifier.bias"}
    before = {k: v.clone() for k, v in probe.model.state_dict().items()}
    optimizer = torch.optim.SGD([p for p in probe.model.parameters() if p.requires_grad], lr=0.1)
    for _ in range(2):
        loss = probe(torch.randn(8, 3, 32, 32) * 3 + 1).logsumexp(1).mean()
        loss.backward()
        optimizer.step()
    after = probe.model.state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed == {"classifier.weight", "classifier.bias"}  # BN statistics included: the backbone is in eval


def refused(argv: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> str:
    """Run ``pipeline fit ARGV`` in-process; assert a one-line refusal with nothing of a run created."""
    assert cli.main(["fit", *argv, "--run.root", str(tmp_path / "runs")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) >= 1 and err[-1].startswith("pipeline fit: error: ")
    assert not dist.is_initialized() and not (tmp_path / "runs").exists()
    return err[-1]


def test_a_different_architecture_is_refused_naming_the_keys(
    source: Path, digits: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = ["--config", str(REPO / "configs" / "transfer" / "cifar100.yaml"), "--data.root", str(digits)]
    line = refused([*config, "--model.phi", "1", "--model.base_resolution", "32", "--model.init_from", str(source)],
                   tmp_path, capsys)
    assert "is not the network of" in line and "strategy w vs compound" in line and "w 0.5 vs 1.1" in line
    assert line.endswith("request it with: --model.strategy w --model.scale 0.25 --model.base_resolution 32")
    line = refused([*config, *SOURCE_SPEC, "--model.init_from", str(source / "nothing.ckpt")], tmp_path, capsys)
    assert line.endswith("does not exist (give a run directory or a .ckpt file)")


class Payload:
    """Unpickling this runs a shell command: what weights_only loading exists to refuse."""

    def __reduce__(self) -> tuple:
        return os.system, (f"touch {os.environ['PWNED']}",)


def test_a_checkpoint_with_pickled_code_is_refused(
    source: Path, digits: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    checkpoint = torch.load(source / "checkpoints" / "best.ckpt", weights_only=True)
    checkpoint["hyper_parameters"]["payload"] = Payload()
    monkeypatch.setenv("PWNED", str(tmp_path / "pwned"))
    torch.save(checkpoint, tmp_path / "evil.ckpt")
    line = refused(["--config", str(REPO / "configs" / "transfer" / "cifar100.yaml"), "--data.root", str(digits),
                    *SOURCE_SPEC, "--model.init_from", str(tmp_path / "evil.ckpt")], tmp_path, capsys)
    assert "is refused by weights_only loading (Trying to load unsupported GLOBAL posix.system" in line
    assert not (tmp_path / "pwned").exists()


def test_timm_weights_offline_are_a_clear_error(digits: Path, tmp_path: Path) -> None:
    done = run_pipeline("fit", "--config", str(REPO / "configs" / "transfer" / "cifar100.yaml"), "--data.root",
                        str(digits), "--run.root", str(tmp_path / "runs"), "--model.variant", "b0",
                        "--model.init_from", "timm:efficientnet_b0", cwd=tmp_path, env={"HF_HUB_OFFLINE": "1"},
                        timeout=300)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert done.stderr.strip().splitlines()[-1].startswith(
        "pipeline fit: error: cannot fetch timm's pretrained weights for efficientnet_b0 (no hub access?")
    assert not (tmp_path / "runs").exists()


def test_a_checkpoint_run_ignores_init_from(source: Path, digits: Path, tmp_path: Path) -> None:
    """With ``--ckpt_path`` the checkpoint restores every weight: the source is neither checked nor read."""
    done = run_pipeline("validate", "--config", str(REPO / "configs" / "transfer" / "cifar100.yaml"), *SOURCE_SPEC,
                        *ONE_PROCESS, "--data.root", str(digits), "--data.val_split", "val", "--run.root",
                        str(tmp_path / "runs"), "--model.init_from", str(tmp_path / "gone"),
                        "--ckpt_path", str(source / "checkpoints" / "best.ckpt"), cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "val/top1" in done.stdout
