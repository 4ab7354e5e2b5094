"""Precise BN: recomputed statistics are the exact statistics of the samples, on one rank and over two."""

from __future__ import annotations

import copy
import itertools
import os
import socket
from pathlib import Path
from typing import Any

import pytest
import pytorch_lightning as pl
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F
import yaml
from pytorch_lightning.callbacks import Callback
from timm.layers import BatchNormAct2d
from torch import Tensor, nn

from pipeline.data.datamodule import ShardDataModule
from pipeline.data.sharding import write_shards
from pipeline.data.sources import get_source
from pipeline.data.transforms import normalize_images
from pipeline.errors import PipelineError
from pipeline.training.module import ScaledClassifier
from pipeline.training.precise_bn import PreciseBN, recompute_bn_stats
from pipeline.training.recipe import Recipe
from tests.training.conftest import DEMO_CONFIG, REPO
from tests.training.transfer_data import write_digits_as_cifar100


def stale_network() -> nn.Sequential:
    """BN on the input, a fixed 1×1 conv, timm's BatchNormAct2d, dropout; all running stats deliberately wrong."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.BatchNorm2d(2), nn.Conv2d(2, 3, 1, bias=True), BatchNormAct2d(3), nn.Dropout(0.5))
    for bn in (net[0], net[2]):
        bn.running_mean.fill_(5.0)
        bn.running_var.fill_(100.0)
        bn.num_batches_tracked.fill_(7)
    return net


def samples() -> Tensor:
    """8 images of 2 channels, 2×2 px: channel 0 of image i is i everywhere, channel 1 is 10 − 2i."""
    i = torch.arange(8, dtype=torch.float32).view(8, 1, 1, 1)
    return torch.cat([i.expand(8, 1, 2, 2), (10 - 2 * i).expand(8, 1, 2, 2)], dim=1).contiguous()


def batches(x: Tensor) -> list[Tensor]:
    return [x[:3], x[3:6], x[6:]]  # uneven: per-batch averages (pycls) would weigh the last batch as a full one


def second_layer_inputs(net: nn.Sequential, parts: list[Tensor]) -> Tensor:
    """What the BatchNormAct2d sees in training-mode BN: the conv of each batch normalised by its own stats."""
    with torch.no_grad():
        return torch.cat([net[1](F.batch_norm(b, None, None, net[0].weight, net[0].bias, training=True))
                          for b in parts])


def test_stale_statistics_become_the_exact_statistics_of_the_samples() -> None:
    net = stale_network()
    ema = copy.deepcopy(net)
    net.train()
    ema.eval()
    x = samples()
    expected_inner = second_layer_inputs(net, batches(x))

    assert recompute_bn_stats([net, ema], batches(x)) == 8

    # mean of 0..7 = 3.5, population variance 5.25 over 8 values each repeated on 4 pixels: unbiased ×32/31
    for bn in (net[0], ema[0]):
        assert bn.running_mean.tolist() == pytest.approx([3.5, 3.0], abs=1e-6)
        assert bn.running_var.tolist() == pytest.approx([5.25 * 32 / 31, 21.0 * 32 / 31], abs=1e-5)
        assert bn.num_batches_tracked.item() == 7
    flat = expected_inner.permute(1, 0, 2, 3).reshape(3, -1).double()
    for bn in (net[2], ema[2]):
        torch.testing.assert_close(bn.running_mean, flat.mean(1).float())
        torch.testing.assert_close(bn.running_var, flat.var(1, unbiased=True).float())
    assert net.training and all(m.training for m in net.modules())
    assert not ema.training and not any(m.training for m in ema.modules())


def test_evaluation_with_recomputed_stats_normalises_the_samples() -> None:
    net = stale_network()
    x = samples()
    recompute_bn_stats([net], [x])  # one batch: eval mode now normalises exactly as training mode did
    net.eval()
    with torch.no_grad():
        normalised = net[0](x)
    assert normalised.mean((0, 2, 3)).abs().max().item() < 1e-6
    # the running variance is the unbiased one, as PyTorch keeps it (eps = 1e-5 against 5.25 and 21)
    assert normalised.var((0, 2, 3), unbiased=True).tolist() == pytest.approx([1.0, 1.0], rel=1e-5)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _rank(rank: int, port: int, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=2)
    net = stale_network()

    def all_reduce(t: Tensor) -> Tensor:
        dist.all_reduce(t)
        return t

    parts = batches(samples())
    images = recompute_bn_stats([net], parts[:2] if rank == 0 else parts[2:], reduce=all_reduce)
    torch.save({"images": images, "state": net.state_dict()}, Path(out) / f"rank{rank}.pt")
    dist.destroy_process_group()


def test_ranks_combine_their_statistics(tmp_path: Path) -> None:
    mp.spawn(_rank, args=(_free_port(), str(tmp_path)), nprocs=2)
    single = stale_network()
    recompute_bn_stats([single], batches(samples()))
    for rank in (0, 1):
        saved = torch.load(tmp_path / f"rank{rank}.pt")
        assert saved["images"] == 8
        for key, value in single.state_dict().items():
            torch.testing.assert_close(saved["state"][key], value, msg=key)


def test_negative_sample_count_is_refused() -> None:
    with pytest.raises(PipelineError, match="precise_bn_samples must be ≥ 0"):
        PreciseBN(-1)


# The finding at the scale of a test: a digits source run, fine-tuned for 3 epochs on the digits written as
# CIFAR-100 pickles with the transfer config's BN momentum 0.01 (lr 0.08 per 256, no warm-up, no augmentation).
SPEC = {"phi": None, "strategy": "w", "scale": 0.25, "base_resolution": 32}
PLAIN_DATA = {"batch_size": 32, "num_workers": 0, "auto_augment": None, "scale": (1.0, 1.0), "hflip": 0.0,
              "crop_pct": 1.0, "color_jitter": None}


def _trainer(epochs: int, callbacks: list[Callback] | None = None) -> pl.Trainer:
    return pl.Trainer(accelerator="cpu", devices=1, max_epochs=epochs, logger=False, enable_checkpointing=False,
                      enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0,
                      limit_val_batches=0, callbacks=callbacks or [])


def _recipe(path: Path, **overrides: Any) -> Recipe:
    return Recipe(**{**yaml.safe_load(path.read_text())["model"]["recipe"], **overrides})


def _top1(module: ScaledClassifier, data: ShardDataModule, callbacks: list[Callback]) -> tuple[float, float]:
    trainer = pl.Trainer(accelerator="cpu", devices=1, logger=False, enable_progress_bar=False,
                         enable_model_summary=False, callbacks=callbacks)
    metrics = trainer.validate(module, data, verbose=False)[0]
    return metrics["val/top1"], metrics["val/top1_ema"]


@pytest.mark.slow
def test_precise_bn_rescues_a_short_fine_tune_with_lagging_statistics(digits: Path, tmp_path: Path) -> None:
    pl.seed_everything(0)
    source = ScaledClassifier(**SPEC, num_classes=10, drop_path=0.1, recipe=_recipe(DEMO_CONFIG))
    source_data = ShardDataModule(str(digits), resolution=32, **PLAIN_DATA)
    trainer = _trainer(3)
    trainer.fit(source, source_data)
    trainer.save_checkpoint(tmp_path / "source.ckpt")

    write_digits_as_cifar100(tmp_path / "pickles")
    write_shards(get_source("cifar100", str(tmp_path / "pickles")), tmp_path / "c100")
    pl.seed_everything(0)
    recipe = _recipe(REPO / "configs" / "transfer" / "cifar100.yaml", lr_per_256=0.08, warmup_epochs=0,
                     ema_epochs=0.22)
    assert recipe.bn_momentum == 0.01
    tuned = ScaledClassifier(**SPEC, num_classes=100, recipe=recipe, init_from=str(tmp_path / "source.ckpt"))
    data = ShardDataModule(str(tmp_path / "c100"), resolution=32, val_split="test", **PLAIN_DATA)
    _trainer(3).fit(tuned, data)

    stale = _top1(tuned, data, [])
    precise_bn = PreciseBN(8192)
    precise = _top1(tuned, data, [precise_bn])
    print(f"top-1 (raw, EMA) on 360 images: stale BN statistics {stale}, precise BN {precise}")
    assert precise_bn.last_samples == 1437 - 1437 % 32  # the whole train epoch: fewer than 8192 images
    assert stale[0] < 0.25  # 100-way head, 10 classes used: chance is 10 %
    assert precise[0] > stale[0] + 0.3 and precise[1] > stale[1] + 0.3


def test_callback_in_fit_uses_the_first_train_images_of_epoch_0(digits: Path) -> None:
    pl.seed_everything(0)
    module = ScaledClassifier(**SPEC, num_classes=10, recipe=_recipe(DEMO_CONFIG))
    data = ShardDataModule(str(digits), resolution=32, **PLAIN_DATA)
    precise_bn = PreciseBN(48)  # one batch of 32 and 16 of the next
    trainer = pl.Trainer(accelerator="cpu", devices=1, max_epochs=2, limit_train_batches=2, limit_val_batches=1,
                         num_sanity_val_steps=1, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False, callbacks=[precise_bn])
    trainer.fit(module, data)
    assert precise_bn.last_samples == 48
    assert trainer.fit_loop.epoch_loop.batch_progress.total.completed == 4  # the fit's own batches, untouched

    # the statistics the last validation used: the same 48 images through copies of the final networks
    networks = [copy.deepcopy(module.model), copy.deepcopy(module.ema.module)]
    for network in networks:
        for layer in network.modules():
            if isinstance(layer, nn.BatchNorm2d):
                layer.running_mean.fill_(5.0)
    loader = data.loader("train")
    loader.epoch_fn = None  # epoch 0, as the callback reads it
    images = torch.cat([images for images, _, _ in itertools.islice(loader, 2)])[:48]
    recompute_bn_stats(networks, [normalize_images(images[:32]), normalize_images(images[32:])])
    for fitted, copied in ((module.model, networks[0]), (module.ema.module, networks[1])):
        for key, value in copied.state_dict().items():
            if "running_" in key:
                torch.testing.assert_close(fitted.state_dict()[key], value, msg=key)
