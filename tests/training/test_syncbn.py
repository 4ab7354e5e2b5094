"""SyncBatchNorm keeps timm's fused BN + activation layers: the network a synced trainer trains is the network built."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch
import torch.distributed as dist
from timm.layers import BatchNormAct2d, SyncBatchNormAct
from torch import nn

from pipeline import cli
from pipeline.training.module import ScaledClassifier
from pipeline.training.syncbn import TimmSyncBatchNorm, layer_sync_plugins
from tests.training.conftest import DEMO_CONFIG


def logits(model: nn.Module, images: torch.Tensor) -> torch.Tensor:
    """Eval-mode logits (the model's train/eval mode is restored)."""
    was_training = model.training
    model.eval()
    with torch.no_grad():
        out = model(images)
    model.train(was_training)
    return out


def norm_types(model: nn.Module) -> set[str]:
    return {type(m).__name__ for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)}


@pytest.fixture(scope="module")
def b0() -> nn.Module:
    """A real timm EfficientNet-B0 (224 px, 1000 classes) with non-trivial BN statistics."""
    module = ScaledClassifier(variant="b0", num_classes=1000)
    with torch.no_grad():
        for bn in module.model.modules():
            if isinstance(bn, nn.BatchNorm2d):
                bn.running_mean.uniform_(-0.1, 0.1)
                bn.running_var.uniform_(0.5, 1.5)
    return module.model


def test_plugin_keeps_every_activation_of_b0(b0: nn.Module) -> None:
    torch.manual_seed(0)
    images = torch.randn(2, 3, 224, 224)
    before = logits(b0, images)
    fused = {name: type(m.act) for name, m in b0.named_modules() if isinstance(m, BatchNormAct2d)}
    assert len(fused) == 49 and sum(act is nn.SiLU for act in fused.values()) == 33  # the rest: Identity (projections)

    synced = TimmSyncBatchNorm().apply(copy.deepcopy(b0))
    modules = dict(synced.named_modules())
    assert all(type(modules[name]) is SyncBatchNormAct for name in fused)
    assert all(type(modules[name].act) is act for name, act in fused.items())
    assert norm_types(synced) <= {"SyncBatchNormAct", "SyncBatchNorm"}
    assert torch.equal(logits(synced, images), before)

    reverted = TimmSyncBatchNorm().revert(synced)  # what Lightning does at teardown
    assert all(type(dict(reverted.named_modules())[name]) is BatchNormAct2d for name in fused)
    assert torch.equal(logits(reverted, images), before)

    # What Lightning's default sync_batchnorm=True did (torch's converter): every activation gone.
    stripped = torch.nn.SyncBatchNorm.convert_sync_batchnorm(copy.deepcopy(b0))
    assert (logits(stripped, images) - before).abs().max() > 1.0


def test_no_plugin_without_sync_batchnorm() -> None:
    assert layer_sync_plugins(False) == []
    assert [type(p) for p in layer_sync_plugins(True)] == [TimmSyncBatchNorm]


def test_a_synced_trainer_trains_the_network_with_its_activations() -> None:
    """The layer sync Lightning's DDP strategy applies at fit setup (``strategy._layer_sync.apply``) keeps them.

    The fit itself cannot run here: DDP refuses SyncBatchNorm on CPU modules ("only work with GPU modules").
    """
    module = ScaledClassifier(phi=0, base_resolution=32, num_classes=10)
    images = torch.randn(4, 3, 32, 32)
    before = logits(module, images)
    trainer = pl.Trainer(accelerator="cpu", devices=2, strategy="ddp", sync_batchnorm=True,
                         plugins=layer_sync_plugins(True), logger=False)
    layer_sync = trainer.strategy._layer_sync
    assert type(layer_sync) is TimmSyncBatchNorm
    synced = layer_sync.apply(module)
    assert norm_types(synced.model) == {"SyncBatchNormAct"} and norm_types(synced.ema) == {"SyncBatchNormAct"}
    assert torch.equal(logits(synced, images), before)
    reverted = layer_sync.revert(synced)  # at teardown after fit
    assert norm_types(reverted.model) == {"BatchNormAct2d"}
    assert torch.equal(logits(reverted, images), before)


@pytest.mark.parametrize("accelerator", ["cpu", "auto"])
def test_sync_batchnorm_on_cpu_is_refused_before_launch(
    accelerator: str, digits: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    if accelerator == "auto" and torch.cuda.is_available():
        pytest.skip("auto picks the GPU here")
    argv = ["fit", "--config", str(DEMO_CONFIG), "--data.root", str(digits), "--run.root", str(tmp_path),
            "--trainer.sync_batchnorm", "true", "--trainer.accelerator", accelerator]
    assert cli.main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"pipeline fit: error: trainer.sync_batchnorm needs GPUs (torch's SyncBatchNorm does not train on "
                   f"CPU), but the accelerator is {accelerator}{' with no GPU here' if accelerator == 'auto' else ''}: "
                   "set --trainer.sync_batchnorm false"]
    assert not dist.is_initialized()
    assert not (tmp_path / "demo").exists()
