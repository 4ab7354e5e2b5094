"""SyncBatchNorm that keeps timm's fused norm + activation layers.

Lightning's ``sync_batchnorm=True`` converts with ``torch.nn.SyncBatchNorm.convert_sync_batchnorm``, which
turns timm's ``BatchNormAct2d`` (BN + SiLU/ReLU in one module) into a plain ``SyncBatchNorm`` whose forward
never calls the activation: EfficientNet and MobileNetV2 would train without activations. timm's own
``convert_sync_batchnorm`` gives ``SyncBatchNormAct`` instead. Lightning takes any ``TorchSyncBatchNorm``
subclass passed in ``Trainer(plugins=...)`` as its layer sync, in place of its default, so this plugin is
the whole fix.
"""

from __future__ import annotations

from typing import Any

import torch
from pytorch_lightning.accelerators import CPUAccelerator
from pytorch_lightning.plugins.layer_sync import TorchSyncBatchNorm
from timm.layers import BatchNormAct2d, SyncBatchNormAct, convert_sync_batchnorm
from torch import nn

from pipeline.errors import PipelineError


class TimmSyncBatchNorm(TorchSyncBatchNorm):
    """Lightning layer-sync plugin converting through ``timm.layers.convert_sync_batchnorm``."""

    def apply(self, model: nn.Module) -> nn.Module:
        """BatchNormAct2d → SyncBatchNormAct (activation and drop kept), other BatchNorms → SyncBatchNorm."""
        return convert_sync_batchnorm(model)

    def revert(self, model: nn.Module) -> nn.Module:
        """Undo :meth:`apply` after fit: SyncBatchNormAct → BatchNormAct2d, then Lightning's revert for the rest.

        Hand-written because timm has no inverse converter, and Lightning's revert would turn a
        SyncBatchNormAct (a SyncBatchNorm subclass) into a plain batch norm that drops the activation.
        """
        return super().revert(_revert_norm_act(model))


def _revert_norm_act(module: nn.Module) -> nn.Module:
    """``module`` with every SyncBatchNormAct replaced by a BatchNormAct2d sharing its tensors, act and drop."""
    if isinstance(module, SyncBatchNormAct):
        plain = BatchNormAct2d(module.num_features, module.eps, module.momentum, module.affine,
                               module.track_running_stats, apply_act=False)
        if module.affine:
            with torch.no_grad():
                plain.weight, plain.bias = module.weight, module.bias
        plain.running_mean, plain.running_var = module.running_mean, module.running_var
        plain.num_batches_tracked = module.num_batches_tracked
        plain.train(module.training)
        for name, child in module.named_children():  # act and drop replace the placeholders
            plain.add_module(name, child)
        module = plain
    for name, child in list(module.named_children()):
        module.add_module(name, _revert_norm_act(child))
    return module


def layer_sync_plugins(sync_batchnorm: bool) -> list[TorchSyncBatchNorm]:
    """The Trainer plugins that ``trainer.sync_batchnorm`` asks for: timm's conversion, or none."""
    return [TimmSyncBatchNorm()] if sync_batchnorm else []


def check_sync_batchnorm(sync_batchnorm: bool, accelerator: Any) -> None:
    """Refuse ``sync_batchnorm`` on a CPU run: torch's SyncBatchNorm trains only on GPUs (it raises mid-fit)."""
    if not sync_batchnorm:
        return
    accelerator = accelerator or "auto"
    if isinstance(accelerator, CPUAccelerator):
        accelerator = "cpu"
    on_cpu = accelerator == "cpu" or (accelerator == "auto" and not torch.cuda.is_available())
    if on_cpu:
        raise PipelineError(
            f"trainer.sync_batchnorm needs GPUs (torch's SyncBatchNorm does not train on CPU), but the "
            f"accelerator is {accelerator}{' with no GPU here' if accelerator == 'auto' else ''}: "
            "set --trainer.sync_batchnorm false"
        )
