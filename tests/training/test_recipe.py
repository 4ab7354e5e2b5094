"""The EfficientNet recipe is built from timm's own objects with the paper's hyper-parameters."""

from __future__ import annotations

import math

import pytest
import torch
from timm.loss import LabelSmoothingCrossEntropy
from timm.optim import RMSpropTF
from timm.scheduler import StepLRScheduler
from timm.utils import ModelEmaV3

from pipeline.errors import PipelineError
from pipeline.training.module import ScaledClassifier
from pipeline.training.recipe import (
    Recipe,
    build_ema,
    build_loss,
    build_optimizer,
    build_scheduler,
    ema_decay_per_update,
    scaled_lr,
)


@pytest.fixture(scope="module")
def module() -> ScaledClassifier:
    return ScaledClassifier(strategy="w", scale=0.25, base_resolution=32, num_classes=10)


def test_lr_scales_linearly_with_the_global_batch() -> None:
    recipe = Recipe()
    assert scaled_lr(recipe, 256) == pytest.approx(0.016)
    assert scaled_lr(recipe, 4096) == pytest.approx(0.256)  # the paper's TPU batch
    assert scaled_lr(recipe, 64) == pytest.approx(0.004)
    with pytest.raises(PipelineError):
        scaled_lr(recipe, 0)


def test_optimizer_is_timm_rmsproptf_with_the_papers_settings(module: ScaledClassifier) -> None:
    opt = build_optimizer(module.model, Recipe(), global_batch=512)
    assert type(opt) is RMSpropTF
    for group in opt.param_groups:
        assert group["lr"] == pytest.approx(0.032)
        assert group["alpha"] == 0.9 and group["momentum"] == 0.9 and group["eps"] == 1e-3
    decays = sorted({g["weight_decay"] for g in opt.param_groups})
    assert decays == [0.0, 1e-5]  # timm: no decay on biases and norm weights


def test_scheduler_is_timm_step_per_update_with_fractional_decay_epochs(module: ScaledClassifier) -> None:
    opt = build_optimizer(module.model, Recipe(), global_batch=256)
    updates = 100
    sched = build_scheduler(opt, Recipe(), epochs=350, updates_per_epoch=updates)
    assert type(sched) is StepLRScheduler and not sched.t_in_epochs
    assert sched.warmup_t == 5 * updates and sched.decay_t == pytest.approx(2.4 * updates)
    assert sched.decay_rate == 0.97
    assert opt.param_groups[0]["lr"] == pytest.approx(1e-6)  # warm-up starts low
    sched.step_update(num_updates=5 * updates)  # decay counts from step 0, as TF's exponential_decay
    assert opt.param_groups[0]["lr"] == pytest.approx(0.016 * 0.97**2)
    sched.step_update(num_updates=int(2.4 * updates * 10))  # 10 decays at 24 epochs
    assert opt.param_groups[0]["lr"] == pytest.approx(0.016 * 0.97**10)


def test_ema_loss_and_bn_momentum(module: ScaledClassifier) -> None:
    assert isinstance(module.ema, ModelEmaV3) and Recipe().ema_epochs == 32
    assert not any(p.requires_grad for p in module.ema.parameters())  # DDP must not wait for EMA grads
    loss, mixup = build_loss(Recipe(), 10)
    assert isinstance(loss, LabelSmoothingCrossEntropy) and loss.smoothing == 0.1 and mixup is None
    bns = [m for m in module.model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert bns and all(m.momentum == 0.01 for m in bns)  # TF decay 0.99
    assert module.spec.drop_path == 0.2
    assert build_ema(module.model, Recipe(ema_epochs=None)) is None


def test_ema_follows_the_weights() -> None:
    model = torch.nn.Linear(2, 2)
    ema = build_ema(model, Recipe(ema_epochs=2.0), updates_per_epoch=1)  # decay 1 - 1/2
    assert ema is not None
    before = ema.module.weight.clone()
    with torch.no_grad():
        model.weight.add_(1.0)
    ema.update(model, step=10)
    assert torch.allclose(ema.module.weight, before + 0.5)


IMAGENET, FLOWERS102 = 1_281_167, 1_020  # train images


@pytest.mark.parametrize(("images", "global_batch"), [(IMAGENET, 4096), (IMAGENET, 1024), (IMAGENET, 256),
                                                      (FLOWERS102, 64), (1437, 64)])
def test_ema_horizon_in_epochs_is_the_recipes_at_any_batch_and_dataset(images: int, global_batch: int) -> None:
    updates = images // global_batch
    decay = ema_decay_per_update(32, updates)
    assert 1 / (1 - decay) / updates == pytest.approx(32)  # time constant: 32 epochs of updates
    assert decay ** (32 * updates) == pytest.approx(math.exp(-1), rel=0.02)  # weight of a 32-epoch-old update


def test_ema_decay_per_update_matches_the_papers_and_the_demos() -> None:
    assert ema_decay_per_update(32, IMAGENET // 4096) == pytest.approx(0.9999, abs=2e-7)  # paper: 0.9999 at 4096
    assert ema_decay_per_update(4.5, 1437 // 64) == pytest.approx(0.99, abs=2e-4)  # demo: was 0.99 at batch 64
    assert ema_decay_per_update(0.5, 1) == 0.0  # horizon under one update: the EMA is the weights
    with pytest.raises(PipelineError):
        ema_decay_per_update(32, 0)


@pytest.mark.parametrize("bad", [
    {"lr_per_256": 0.0}, {"label_smoothing": 1.0}, {"ema_epochs": 0.0}, {"bn_momentum": 0.99}, {"mixup": -1.0},
])
def test_impossible_recipes_are_refused(bad: dict) -> None:
    with pytest.raises(PipelineError):
        Recipe(**bad).check()


def test_cosine_recipe_builds() -> None:
    model = torch.nn.Linear(2, 2)
    recipe = Recipe(opt="adamw", opt_kwargs={}, sched="cosine", warmup_epochs=0.5, weight_decay=0.05)
    opt = build_optimizer(model, recipe, 256)
    sched = build_scheduler(opt, recipe, epochs=2, updates_per_epoch=10)
    sched.step_update(num_updates=20)
    assert math.isclose(opt.param_groups[0]["lr"], recipe.min_lr, abs_tol=1e-9)


@pytest.mark.slow
def test_lr_follows_batch_times_accumulation_in_a_real_trainer(digits) -> None:
    import pytorch_lightning as pl

    from pipeline.data.datamodule import ShardDataModule
    from pipeline.training.callbacks import RunSummary

    data = ShardDataModule(str(digits), resolution=32, batch_size=8, num_workers=0)
    module = ScaledClassifier(strategy="w", scale=0.25, base_resolution=32, num_classes=data.num_classes)
    trainer = pl.Trainer(accelerator="cpu", devices=1, max_epochs=1, limit_train_batches=8, limit_val_batches=0,
                         accumulate_grad_batches=4, logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, use_distributed_sampler=False)
    trainer.fit(module, data)
    assert module.global_batch() == 8 * 1 * 4
    assert trainer.global_step == 2  # 8 batches / 4 accumulated
    group = trainer.optimizers[0].param_groups[0]
    assert group["initial_lr"] == pytest.approx(0.016 * 32 / 256)
    assert module.ema is not None and module.ema.decay == 1 - 1 / (32 * 2)  # 32 epochs of 2 updates
    assert RunSummary("digits").config(trainer, module)["ema_decay_per_update"] == module.ema.decay
