"""Training recipes: optimizer, lr schedule, loss, EMA — all built from timm's factories.

The default ``Recipe()`` is EfficientNet's (Tan & Le 2019, as reproduced by timm's ``train.py``):
RMSpropTF (decay 0.9, momentum 0.9, eps 1e-3), lr 0.016 per 256 images scaled linearly with the
global batch, 5 warm-up epochs, ×0.97 every 2.4 epochs, weight decay 1e-5, BN momentum 0.99 in
TF's meaning (0.01 in PyTorch's), label smoothing 0.1, weight EMA 0.9999 per update at the paper's
global batch 4096 on ImageNet, i.e. a horizon of 32 epochs (``ema_epochs``). AutoAugment lives on
the data side (``data.auto_augment``); stochastic depth and dropout live in the ScaleSpec.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

import torch
from timm.data import Mixup
from timm.loss import LabelSmoothingCrossEntropy, SoftTargetCrossEntropy
from timm.optim import create_optimizer_v2
from timm.scheduler import create_scheduler_v2
from timm.scheduler.scheduler import Scheduler
from timm.utils import ModelEmaV3
from torch import nn

from pipeline.errors import PipelineError

REFERENCE_BATCH = 256  # the lr is given per this many images (Goyal et al.'s linear scaling rule)


@dataclass(frozen=True)
class Recipe:
    """Optimisation hyper-parameters; names follow timm's ``train.py`` flags.

    ``opt_kwargs`` go to the timm optimizer as-is (RMSpropTF: ``alpha`` is TF's decay).
    The weight EMA is given by its horizon ``ema_epochs`` (``None`` turns it off): the per-update decay
    is derived from the updates per epoch of the run (:func:`ema_decay_per_update`), so the EMA averages
    over the same number of epochs at any global batch and dataset size. A fixed per-update decay would
    not: 0.9999 is 32 epochs at the paper's batch 4096 on ImageNet, 8 at batch 1024, and ~670 epochs
    at batch 64 on Flowers-102's 1,020 images, whose EMA then stays near the random init. A decay
    rescaled only by the batch (``decay^(batch / 4096)``) would fix the first two, not the third.
    ``ema_warmup`` keeps timm's warm-up (a lower decay over the first updates). Epoch counts may be
    fractional: the schedule is stepped per optimizer update.
    """

    opt: str = "rmsproptf"
    lr_per_256: float = 0.016
    momentum: float = 0.9
    weight_decay: float = 1e-5
    opt_kwargs: dict[str, Any] = field(default_factory=lambda: {"alpha": 0.9, "eps": 1e-3})
    sched: str = "step"
    warmup_epochs: float = 5.0
    warmup_lr: float = 1e-6
    decay_epochs: float = 2.4
    decay_rate: float = 0.97
    min_lr: float = 0.0
    label_smoothing: float = 0.1
    bn_momentum: float | None = 0.01
    ema_epochs: float | None = 32.0  # 0.9999 per update at batch 4096 on ImageNet: 10,000 of 312.8 updates/epoch
    ema_warmup: bool = False
    mixup: float = 0.0
    cutmix: float = 0.0

    def check(self) -> None:
        """PipelineError for values outside their domain (called by the module, so the CLI reports it in one line)."""
        if not self.lr_per_256 > 0:
            raise PipelineError(f"recipe.lr_per_256 must be > 0 (got {self.lr_per_256})")
        if self.weight_decay < 0 or self.warmup_epochs < 0 or self.decay_epochs <= 0:
            raise PipelineError("recipe: weight_decay and warmup_epochs must be >= 0 and decay_epochs > 0")
        if not 0 <= self.label_smoothing < 1:
            raise PipelineError(f"recipe.label_smoothing must be in [0, 1) (got {self.label_smoothing})")
        if self.ema_epochs is not None and not self.ema_epochs > 0:
            raise PipelineError(f"recipe.ema_epochs must be > 0 or null to disable (got {self.ema_epochs})")
        if self.bn_momentum is not None and not 0 < self.bn_momentum <= 0.5:
            raise PipelineError(  # 0.99 is TF's decay written in the wrong convention
                f"recipe.bn_momentum is PyTorch's (1 - TF decay, e.g. 0.01 for TF's 0.99) and must be in (0, 0.5] "
                f"(got {self.bn_momentum})"
            )
        if self.mixup < 0 or self.cutmix < 0:
            raise PipelineError("recipe.mixup and recipe.cutmix must be >= 0 (0 turns them off)")

    def record(self) -> dict[str, Any]:
        """The recipe as a plain dict (for hyper-parameters and logs)."""
        return dataclasses.asdict(self)


# Lightning stores init args in checkpoints; this lets them load with torch.load(weights_only=True).
torch.serialization.add_safe_globals([Recipe])


def scaled_lr(recipe: Recipe, global_batch: int) -> float:
    """The linear scaling rule: ``lr_per_256 × global_batch / 256``."""
    if global_batch < 1:
        raise PipelineError(f"global batch must be >= 1 (got {global_batch})")
    return recipe.lr_per_256 * global_batch / REFERENCE_BATCH


def build_optimizer(model: nn.Module, recipe: Recipe, global_batch: int) -> torch.optim.Optimizer:
    """timm's optimizer for ``model`` (no weight decay on biases and norms, as timm's train.py)."""
    return create_optimizer_v2(
        model,
        opt=recipe.opt,
        lr=scaled_lr(recipe, global_batch),
        weight_decay=recipe.weight_decay,
        momentum=recipe.momentum,
        **recipe.opt_kwargs,
    )


def build_scheduler(
    optimizer: torch.optim.Optimizer, recipe: Recipe, epochs: int, updates_per_epoch: int
) -> Scheduler:
    """timm's scheduler, stepped per optimizer update so fractional epochs (2.4) are honoured."""
    scheduler, _ = create_scheduler_v2(
        optimizer,
        sched=recipe.sched,
        num_epochs=epochs,
        decay_epochs=recipe.decay_epochs,
        decay_rate=recipe.decay_rate,
        min_lr=recipe.min_lr,
        warmup_lr=recipe.warmup_lr,
        warmup_epochs=recipe.warmup_epochs,
        step_on_epochs=False,
        updates_per_epoch=max(1, updates_per_epoch),
    )
    if scheduler is None:
        raise PipelineError(f"recipe.sched {recipe.sched!r} gives no schedule; use step, cosine, ...")
    return scheduler


def build_loss(recipe: Recipe, num_classes: int) -> tuple[nn.Module, Mixup | None]:
    """The training loss and, when mixup/cutmix is on, timm's Mixup (which then applies the smoothing)."""
    if recipe.mixup > 0 or recipe.cutmix > 0:
        mix = Mixup(
            mixup_alpha=recipe.mixup, cutmix_alpha=recipe.cutmix,
            label_smoothing=recipe.label_smoothing, num_classes=num_classes,
        )
        return SoftTargetCrossEntropy(), mix
    return LabelSmoothingCrossEntropy(smoothing=recipe.label_smoothing), None


def ema_decay_per_update(ema_epochs: float, updates_per_epoch: int) -> float:
    """The per-update decay whose horizon is ``ema_epochs``: ``1 - 1 / (ema_epochs × updates_per_epoch)``.

    The horizon is the EMA's time constant, ``1 / (1 - decay)`` updates (the paper's 0.9999: 10,000
    updates). A horizon shorter than one update gives 0: the EMA then equals the weights.
    """
    if updates_per_epoch < 1:
        raise PipelineError(f"updates per epoch must be >= 1 (got {updates_per_epoch})")
    return max(0.0, 1.0 - 1.0 / (ema_epochs * updates_per_epoch))


def build_ema(model: nn.Module, recipe: Recipe, updates_per_epoch: int = 1) -> ModelEmaV3 | None:
    """timm's weight EMA of ``model`` (frozen: DDP must not expect gradients for it), or None.

    Its decay is set for ``updates_per_epoch``; the module sets it again once the run's loader is known.
    """
    if recipe.ema_epochs is None:
        return None
    decay = ema_decay_per_update(recipe.ema_epochs, updates_per_epoch)
    ema = ModelEmaV3(model, decay=decay, use_warmup=recipe.ema_warmup)
    ema.requires_grad_(False)
    return ema


def set_bn_momentum(model: nn.Module, momentum: float) -> None:
    """Set every BatchNorm's momentum (PyTorch meaning: weight of the new batch statistic)."""
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            module.momentum = momentum
