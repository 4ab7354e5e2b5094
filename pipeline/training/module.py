"""ScaledClassifier: a LightningModule around any point of the scaling space, trained with a Recipe."""

from __future__ import annotations

import math
import os
from typing import Any

import pytorch_lightning as pl
import torch
from timm.utils import random_seed
from torch import Tensor
from torchmetrics import MetricCollection
from torchmetrics.classification import MulticlassAccuracy

from pipeline.errors import PipelineError
from pipeline.models.build import build_model
from pipeline.models.complexity import Complexity, count_complexity
from pipeline.scaling import ScaleSpec
from pipeline.scaling.compound import PAPER_ALPHA, PAPER_BETA, PAPER_GAMMA
from pipeline.scaling.fast import DEFAULT_FAST_ALPHA
from pipeline.scaling.spec import SPEC_KEYS, resolve_spec
from pipeline.training.finetune import backbone_eval, freeze_backbone, initial_weights, load_backbone
from pipeline.training.recipe import (
    Recipe,
    build_ema,
    build_loss,
    build_optimizer,
    build_scheduler,
    ema_decay_per_update,
    set_bn_momentum,
)

Batch = tuple[Tensor, Tensor, Tensor]


def _accuracy(num_classes: int) -> MetricCollection:
    return MetricCollection({
        "top1": MulticlassAccuracy(num_classes, top_k=1, average="micro"),
        "top5": MulticlassAccuracy(num_classes, top_k=min(5, num_classes), average="micro"),
    })


class ScaledClassifier(pl.LightningModule):
    """An image classifier at one point of the scaling space, with the raw and EMA weights evaluated side by side.

    The scaling arguments are exactly ``resolve_spec``'s (one of ``variant``, ``phi``, or ``strategy`` +
    ``scale``); ``recipe`` holds the optimisation (EfficientNet's by default). ``channels_last`` and
    ``compile`` are GPU speed switches. Batches are ``(images, labels, skipped)``.
    ``init_from`` / ``init_ema`` / ``linear_probe``: transfer learning (see :mod:`pipeline.training.finetune`).
    """

    def __init__(
        self,
        base: str = "efficientnet",
        variant: str | None = None,
        phi: float | None = None,
        alpha: float = PAPER_ALPHA,
        beta: float = PAPER_BETA,
        gamma: float = PAPER_GAMMA,
        strategy: str | None = None,
        scale: float | None = None,
        fast_alpha: float = DEFAULT_FAST_ALPHA,
        base_resolution: int | None = None,
        resolution: int | None = None,
        dropout: float | None = None,
        drop_path: float | None = None,
        rounding: str | None = None,
        num_classes: int = 1000,
        in_chans: int = 3,
        recipe: Recipe | None = None,
        channels_last: bool = False,
        compile: bool = False,
        init_from: str | None = None,
        init_ema: bool = True,
        linear_probe: bool = False,
    ) -> None:
        super().__init__()
        # the loggers get the resolved config from RunSummary instead: these raw init args would
        # overwrite its keys (``strategy`` here is the Dollár argument, None for a compound run)
        self.save_hyperparameters(logger=False)
        # the scaling arguments above are resolve_spec's, names and defaults (tests/training/test_module.py)
        self.spec: ScaleSpec = resolve_spec(**{k: self.hparams[k] for k in SPEC_KEYS})
        self.recipe = recipe or Recipe()
        self.recipe.check()
        self.model = build_model(self.spec, num_classes=num_classes, in_chans=in_chans)
        # before the EMA copy and the optimizer exist; a resumed run gets init_from=None from the CLI
        if init_from is not None:
            load_backbone(self.model, initial_weights(init_from, init_ema, self.spec, in_chans))
        self.linear_probe = linear_probe
        if linear_probe:
            freeze_backbone(self.model)
        if self.recipe.bn_momentum is not None:
            set_bn_momentum(self.model, self.recipe.bn_momentum)
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format
        self.model.to(memory_format=self.memory_format)
        self.ema = build_ema(self.model, self.recipe)
        # counted on the eager network, before any compile (count_complexity refuses a compiled one)
        self.complexity: Complexity = count_complexity(self.model, self.spec.resolution, in_chans)
        if compile:
            self.model.compile()  # in place: state_dict keys stay those of the plain model
        self.criterion, self.mixup = build_loss(self.recipe, num_classes)
        self.eval_loss = torch.nn.CrossEntropyLoss()
        self.val_acc = _accuracy(num_classes).clone(prefix="val/")
        self.val_acc_ema = _accuracy(num_classes).clone(prefix="val/", postfix="_ema")
        self.test_acc = _accuracy(num_classes).clone(prefix="test/")
        self.test_acc_ema = _accuracy(num_classes).clone(prefix="test/", postfix="_ema")
        self.skipped_total = 0  # corrupt samples dropped by the loaders, summed over ranks and epochs
        self._skipped_epoch = torch.zeros((), dtype=torch.long)

    def forward(self, images: Tensor) -> Tensor:
        """Logits of the raw (non-EMA) network."""
        return self.model(images.contiguous(memory_format=self.memory_format))

    def forward_ema(self, images: Tensor) -> Tensor:
        """Logits of the EMA weights (the module must keep an EMA)."""
        return self.ema.module(images.contiguous(memory_format=self.memory_format))

    def train(self, mode: bool = True) -> ScaledClassifier:
        """Lightning's mode switch; a linear probe keeps its frozen backbone (BatchNorm statistics) in eval mode."""
        super().train(mode)
        if self.linear_probe:
            backbone_eval(self.model)
        return self

    def global_batch(self) -> int:
        """Images per optimizer update over all ranks: batch × devices × nodes × accumulation."""
        trainer = self.trainer
        batch_size = getattr(trainer.datamodule, "batch_size", None)
        if not batch_size:
            raise PipelineError("the data module must expose batch_size (the per-device batch) for lr scaling")
        return int(batch_size) * trainer.world_size * trainer.accumulate_grad_batches

    def updates_per_epoch(self) -> int:
        """Optimizer updates per epoch on each rank (train batches ÷ gradient accumulation).

        Measured on a loader of our own: ``trainer.estimated_stepping_batches`` would create the fit
        loop's train iterator here, before a resumed run's loop state is restored, so it would start
        the wrong epoch's data order. ``limit_train_batches`` is applied as Lightning applies it.
        """
        trainer = self.trainer
        try:
            batches = len(trainer.datamodule.train_dataloader())
        except TypeError as err:
            raise PipelineError("the train loader has no length; the lr schedule needs batches per epoch") from err
        limit = trainer.limit_train_batches
        batches = min(batches, limit) if isinstance(limit, int) else int(batches * limit)
        return max(1, math.ceil(batches / trainer.accumulate_grad_batches))

    def configure_optimizers(self) -> dict[str, Any]:
        """timm optimizer at the linearly scaled lr, timm scheduler stepped per update."""
        optimizer = build_optimizer(self.model, self.recipe, self.global_batch())
        updates = self.updates_per_epoch()
        epochs = self.trainer.max_epochs
        if not epochs or epochs < 0:
            epochs = math.ceil(self.trainer.max_steps / updates)
        scheduler = build_scheduler(optimizer, self.recipe, epochs, updates)
        if self.ema is not None and self.recipe.ema_epochs is not None:
            self.ema.decay = ema_decay_per_update(self.recipe.ema_epochs, updates)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    def lr_scheduler_step(self, scheduler: Any, metric: Any) -> None:
        """timm schedulers take the number of updates done (timm's train loop: ``step_update``)."""
        scheduler.step_update(num_updates=self.global_step)

    def optimizer_step(self, *args: Any, **kwargs: Any) -> None:
        """Step, then fold the new weights into the EMA (after every update, as timm's train.py)."""
        super().optimizer_step(*args, **kwargs)
        if self.ema is not None:
            self.ema.update(self.model, step=self.global_step)

    def on_train_batch_start(self, batch: Batch, batch_idx: int) -> None:
        """Seed this rank's torch / numpy / random with (seed, batch number, rank), as timm's train.py does.

        ``seed_everything`` seeds every rank alike, so drop-path masks, dropout and Mixup/CutMix draws would
        be the same on every rank. Re-seeding per training batch (seed + batches so far × world_size + rank:
        one stream per rank and batch) also makes a run resumed at *any* batch draw what the uninterrupted
        run drew: the batch count is part of the fit loop's checkpointed state, while Lightning saves no RNG
        state. The data order and augmentation are the data module's own, seeded apart from these generators.
        """
        batches = self.trainer.fit_loop.epoch_loop.batch_progress.total.ready
        seed = int(os.environ.get("PL_GLOBAL_SEED", 0)) + batches * self.trainer.world_size
        random_seed(seed, self.global_rank)

    def training_step(self, batch: Batch, batch_idx: int) -> Tensor:
        """Loss on one batch (label smoothing, optional mixup); logs loss and lr; counts skipped samples."""
        images, labels, skipped = batch
        self._skipped_epoch = self._skipped_epoch.to(skipped.device) + skipped.sum()
        targets = labels
        if self.mixup is not None:
            images, targets = self.mixup(images, labels)
        loss = self.criterion(self(images), targets)
        self.log("train/loss", loss, on_step=True, on_epoch=True, prog_bar=True, sync_dist=True,
                 batch_size=len(labels))
        self.log("train/lr", self.optimizers().param_groups[0]["lr"], on_step=True, on_epoch=False)
        return loss

    def on_train_epoch_end(self) -> None:
        """Log the skipped-sample count of this epoch (summed over ranks) and the running total."""
        epoch = int(self.trainer.strategy.reduce(self._skipped_epoch.clone(), reduce_op="sum"))
        self._skipped_epoch = torch.zeros_like(self._skipped_epoch)
        self.skipped_total += epoch
        self.log("train/skipped", float(epoch), rank_zero_only=True)
        self.log("train/skipped_total", float(self.skipped_total), rank_zero_only=True)

    def _evaluate(self, batch: Batch, stage: str, acc: MetricCollection, acc_ema: MetricCollection) -> None:
        images, labels, _ = batch
        logits = self(images)
        n = len(labels)
        self.log(f"{stage}/loss", self.eval_loss(logits, labels), on_epoch=True, sync_dist=True, batch_size=n)
        acc.update(logits, labels)
        self.log_dict(acc, on_epoch=True, batch_size=n)
        if self.ema is not None:
            acc_ema.update(self.forward_ema(images), labels)
            self.log_dict(acc_ema, on_epoch=True, batch_size=n)

    def validation_step(self, batch: Batch, batch_idx: int) -> None:
        """Top-1/top-5 of the raw and the EMA weights."""
        self._evaluate(batch, "val", self.val_acc, self.val_acc_ema)

    def test_step(self, batch: Batch, batch_idx: int) -> None:
        """Top-1/top-5 of the raw and the EMA weights on the test split."""
        self._evaluate(batch, "test", self.test_acc, self.test_acc_ema)

    def predict_step(self, batch: tuple[Any, ...], batch_idx: int) -> dict[str, Any]:
        """Sample keys, labels and the top-5 classes of the raw (and, if kept, the EMA) weights."""
        images, labels, _, keys = batch
        k = min(5, self.hparams.num_classes)
        out = {"key": list(keys), "label": labels.tolist(), "top5": self(images).topk(k).indices.tolist()}
        if self.ema is not None:
            out["top5_ema"] = self.forward_ema(images).topk(k).indices.tolist()
        return out

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Keep the skipped-sample total across restarts (the EMA is a submodule: it is in the state_dict)."""
        checkpoint["skipped_total"] = self.skipped_total

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Restore what ``on_save_checkpoint`` added."""
        self.skipped_total = int(checkpoint.get("skipped_total", 0))
