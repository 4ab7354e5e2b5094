"""Precise BatchNorm statistics: recompute every BN's running mean / variance on training samples before evaluating.

A short run (a fine-tune, a grid candidate) with a small BN momentum evaluates with running statistics that lag
its weights; its accuracy then measures the lag, not the weights. pycls recomputes the statistics on a fixed
number of training samples before every evaluation, on by default (``pycls/core/net.py:
compute_precise_bn_stats``, ``BN.USE_PRECISE_STATS = True``, ``BN.NUM_SAMPLES_PRECISE = 8192`` in
``pycls/core/config.py``). Here the statistics are the exact ones of all samples drawn (a cumulative average,
PyTorch's ``momentum=None``): per channel, the sum of x and x² and the count of every layer's inputs,
summed over batches and over ranks, give the mean and the unbiased variance (PyTorch's running-variance
convention). pycls averages per-batch means and variances instead, which weighs a short last batch as a full one.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import Callback
from torch import Tensor, nn
from torch.nn.modules.batchnorm import _BatchNorm

from pipeline.data.loader import ShardLoader
from pipeline.errors import PipelineError
from pipeline.training.module import ScaledClassifier

PRECISE_BN_SAMPLES = 8192  # pycls's BN.NUM_SAMPLES_PRECISE


def recomputed_layers(network: nn.Module) -> list[_BatchNorm]:
    """The BatchNorms of ``network`` that track running statistics (any subclass: timm's BatchNormAct2d,
    SyncBatchNorm)."""
    return [m for m in network.modules() if isinstance(m, _BatchNorm) and m.track_running_stats]


def recompute_bn_stats(
    networks: Sequence[nn.Module], batches: Iterable[Tensor], reduce: Callable[[Tensor], Tensor] | None = None,
) -> int:
    """Set the running mean and variance of every recomputed BatchNorm of ``networks`` to the statistics of its
    inputs over all ``batches`` (each batch goes through every network); returns the images seen (on all ranks).

    The passes run without gradients, each network in eval mode except the recomputed BNs, which normalise with
    their batch's statistics as in training (dropout and drop-path off: the inputs an evaluation sees). ``reduce``
    sums a tensor over ranks (e.g. the DDP strategy's all-reduce): the statistics are then those of every rank's
    samples together. Train / eval modes and ``num_batches_tracked`` are restored; momentum is left alone.
    """
    layers = [layer for network in networks for layer in recomputed_layers(network)]
    # per layer, one float64 vector: Σx per channel, Σx² per channel, the count of values per channel
    sums = {layer: torch.zeros(2 * layer.num_features + 1, dtype=torch.float64, device=layer.running_mean.device)
            for layer in layers}

    def collect(layer: _BatchNorm, inputs: tuple[Tensor, ...]) -> None:
        x = inputs[0].detach().double()
        dims = [0, *range(2, x.dim())]
        channels = layer.num_features
        acc = sums[layer]
        acc[:channels] += x.sum(dims)
        acc[channels:2 * channels] += (x * x).sum(dims)
        acc[-1] += x.numel() // channels

    modes = {m: m.training for network in networks for m in network.modules()}
    tracked = {layer: layer.num_batches_tracked.clone() for layer in layers if layer.num_batches_tracked is not None}
    hooks = [layer.register_forward_pre_hook(collect) for layer in layers]
    images = 0
    try:
        for network in networks:
            network.eval()
        for layer in layers:
            layer.train()
        with torch.no_grad():
            for batch in batches:
                images += len(batch)
                for network in networks:
                    network(batch)
    finally:
        for hook in hooks:
            hook.remove()
        for module, mode in modes.items():
            module.training = mode
        for layer, count in tracked.items():
            layer.num_batches_tracked.copy_(count)
    device = layers[0].running_mean.device if layers else torch.device("cpu")
    # one all-reduce for every layer and the image count
    packed = torch.cat([*sums.values(), torch.tensor([float(images)], dtype=torch.float64, device=device)])
    if reduce is not None:
        packed = reduce(packed)
    offset = 0
    for layer in layers:
        channels = layer.num_features
        block = packed[offset:offset + 2 * channels + 1]
        offset += len(block)
        total, squares, n = block[:channels], block[channels:-1], float(block[-1])
        if n < 2:  # the layer saw no input (an unused branch): keep what it has
            continue
        mean = total / n
        var = (squares / n - mean * mean).clamp_min(0) * (n / (n - 1))
        layer.running_mean.copy_(mean.to(layer.running_mean.dtype))
        layer.running_var.copy_(var.to(layer.running_var.dtype))
    return int(packed[-1])


class PreciseBN(Callback):
    """Recompute the BN statistics of the raw and the EMA network on ``samples`` training images (over all ranks)
    before every validation (not the sanity check) and every test; ``samples=0`` turns it off, and a linear
    probe (frozen backbone) is left alone.

    The images come from a loader of their own (``datamodule.loader("train")``: the train transform, this rank's
    part of the split), always the first images of train epoch 0, so a test after fit and a separate test of
    the same checkpoint see the same statistics, and the fit's train loader (and its resume state) is not
    touched. ``last_samples`` is the number of images used last time (all ranks), for the run record.
    """

    def __init__(self, samples: int = PRECISE_BN_SAMPLES) -> None:
        if samples < 0:
            raise PipelineError(f"run.precise_bn_samples must be ≥ 0 (0 = off), not {samples}")
        self.samples = samples
        self.last_samples = 0

    def on_validation_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Recompute before a validation (each fit epoch's, or ``trainer.validate``)."""
        if not trainer.sanity_checking:
            self.recompute(trainer, pl_module)

    def on_test_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Recompute before a test."""
        self.recompute(trainer, pl_module)

    def recompute(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Draw this rank's share of ``samples`` train images and recompute the statistics of every network."""
        if self.samples == 0:
            return
        if not isinstance(pl_module, ScaledClassifier):
            raise PipelineError("precise BN needs a ScaledClassifier (its model and EMA); set run.precise_bn_samples 0")
        if pl_module.linear_probe:
            return  # the frozen backbone keeps the source's statistics
        datamodule = trainer.datamodule
        if datamodule is None or not hasattr(datamodule, "loader"):
            raise PipelineError("precise BN draws train images with datamodule.loader('train'); "
                                "set run.precise_bn_samples 0 for another data module")
        loader = datamodule.loader("train")
        if isinstance(loader, ShardLoader):
            loader.epoch_fn = None  # a fresh loader without it starts at epoch 0: the same images every time
        networks = [pl_module.model] + ([pl_module.ema.module] if pl_module.ema is not None else [])
        per_rank = math.ceil(self.samples / trainer.world_size)
        with trainer.precision_plugin.val_step_context():  # autocast as in the evaluation that follows
            self.last_samples = recompute_bn_stats(
                networks, _images(loader, per_rank, trainer, pl_module),
                reduce=lambda t: trainer.strategy.reduce(t, reduce_op="sum") if trainer.world_size > 1 else t,
            )


def _images(loader: Iterable[Any], limit: int, trainer: pl.Trainer, module: ScaledClassifier) -> Iterable[Tensor]:
    """The first ``limit`` images of ``loader`` on the module's device, in the precision's dtype, normalised by the
    data module's batch hook as a validation batch is."""
    seen = 0
    for batch in loader:
        images, *rest = batch
        images = images[:limit - seen].to(module.device)
        seen += len(images)
        images = trainer.datamodule.on_after_batch_transfer((images, *rest), 0)[0]
        yield trainer.precision_plugin.convert_input(images).contiguous(memory_format=module.memory_format)
        if seen >= limit:
            return
