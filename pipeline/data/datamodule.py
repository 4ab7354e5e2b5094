"""``ShardDataModule``: the LightningDataModule that streams a shard root (see :mod:`pipeline.data.stream`)."""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from typing import Any

import pytorch_lightning as pl
import torch
from pytorch_lightning.utilities import rank_zero_info

from pipeline.data.dali import DaliAugment, DaliLoader, dali_augment, require_dali
from pipeline.data.loader import ShardLoader
from pipeline.data.shard_manifest import Manifest, load_manifest
from pipeline.data.stream import ShardStream
from pipeline.data.transforms import SampleDecoder, fast_transform, normalize_images
from pipeline.errors import PipelineError

# Lightning warns about any IterableDataset loader with a length; ours is exact by construction (see plans.py)
warnings.filterwarnings("ignore", message="Your `IterableDataset` has `__len__` defined", category=UserWarning)


def eval_crop_pct(resolution: int) -> float:
    """EfficientNet's eval crop at ``resolution``: ``resolution / (resolution + 32)`` (the paper's code; timm's
    ``tf_efficientnet_b*`` configs: B0 224 → 0.875, B3 300 → 0.904, B7 600 → 0.949)."""
    return resolution / (resolution + 32)


class PredictLoader:
    """A loader Lightning's predict loop iterates as it is.

    ``trainer.predict`` rebuilds every ``DataLoader`` around an index sampler (to report batch indices); a
    streaming loader has no sampler to replace, so it is handed over as a plain iterable.
    """

    def __init__(self, loader: ShardLoader) -> None:
        self.loader = loader

    def __iter__(self) -> Iterator[Any]:
        return iter(self.loader)

    def __len__(self) -> int:
        return len(self.loader)


class ShardDataModule(pl.LightningDataModule):
    """Webdataset shards → timm transforms → ``(images, labels, skipped)`` batches, exact under DDP.

    Train epochs read every sample the ⌊N / (world_size · batch_size)⌋ cut allows exactly once across
    ranks × workers, and the train loader is resumable mid-epoch (``state_dict`` / ``load_state_dict``, which
    Lightning saves in and restores from checkpoints); see :mod:`pipeline.data.plans`, :mod:`pipeline.data.stream`
    and :mod:`pipeline.data.loader`.

    Args:
        root: shard directory, URL prefix, or ``{}`` template (e.g. ``pipe:aws s3 cp s3://b/in1k/{} -``).
        resolution: input side in pixels (the training CLI links it from the model's ScaleSpec).
        batch_size: per-rank training batch; the epoch is ⌊N / (world_size · batch_size)⌋ batches per rank.
        eval_batch_size: per-rank val/test batch (default: ``batch_size``).
        num_workers: DataLoader worker processes per rank (0 = read in the main process).
        shuffle_buffer: samples in each train worker's shuffle buffer.
        seed: base seed of shard order, sample shuffle and augmentation (mixed with epoch, rank, worker).
        auto_augment: timm augmentation string (``"original"`` = AutoAugment, ``"rand-m9-mstd0.5"`` =
            RandAugment, …) or None for colour jitter.
        crop_pct: eval center-crop fraction (resize to ``resolution / crop_pct`` first); None (default):
            ``resolution / (resolution + 32)`` as EfficientNet's code and timm's per-model configs do (224 →
            0.875, 300 → 0.904, 600 → 0.949). The value in use is ``self.crop_pct``; it is logged and
            recorded as the hparam ``eval_crop_pct``.
        interpolation: resize interpolation (``bicubic``, ``bilinear``, …).
        scale: RandomResizedCrop area range.
        hflip: horizontal-flip probability.
        color_jitter: colour-jitter strength when ``auto_augment`` is None (None or 0 = off).
        train_split / val_split / test_split: split names in the manifest (None = not used).
        backend: ``pil`` (CPU decode in loader workers) or ``dali`` (NVIDIA DALI, nvJPEG on the GPU; optional
            dependency, see :mod:`pipeline.data.dali`). Both give uint8 batches, normalised on the device. With
            ``dali``, an ``auto_augment`` or ``interpolation`` DALI has no equivalent of is a PipelineError here.

    Recorded as hparams (logged with the model's): ``backend``, ``augmentation`` (the policy actually applied, or
    the colour jitter), ``interpolation`` and ``eval_crop_pct``.

    The manifest is read and checked, and local train/val shards are checked to exist, in ``__init__``: a bad
    root is a PipelineError before any training starts (the test split: at ``setup("test")``).
    """

    def __init__(
        self,
        root: str,
        resolution: int = 224,
        batch_size: int = 64,
        eval_batch_size: int | None = None,
        num_workers: int = 4,
        shuffle_buffer: int = 2000,
        seed: int = 0,
        auto_augment: str | None = None,
        crop_pct: float | None = None,
        interpolation: str = "bicubic",
        scale: tuple[float, float] = (0.08, 1.0),
        hflip: float = 0.5,
        color_jitter: float | None = 0.4,
        train_split: str | None = "train",
        val_split: str | None = "val",
        test_split: str | None = "test",
        backend: str = "pil",
    ) -> None:
        super().__init__()
        if resolution < 1 or batch_size < 1 or (eval_batch_size is not None and eval_batch_size < 1):
            raise PipelineError("data.resolution, data.batch_size and data.eval_batch_size must be positive")
        if num_workers < 0 or shuffle_buffer < 1 or (crop_pct is not None and not 0 < crop_pct <= 1):
            raise PipelineError("data.num_workers must be ≥ 0, data.shuffle_buffer ≥ 1 and 0 < data.crop_pct ≤ 1")
        self.root = str(root)
        self.resolution, self.batch_size = resolution, batch_size
        self.eval_batch_size = eval_batch_size or batch_size
        self.num_workers, self.shuffle_buffer, self.seed = num_workers, shuffle_buffer, seed
        self.crop_pct = eval_crop_pct(resolution) if crop_pct is None else crop_pct
        rank_zero_info(f"eval crop_pct {self.crop_pct:.4g} at {resolution} px ("
                       f"{'resolution / (resolution + 32)' if crop_pct is None else 'data.crop_pct'})")
        self.auto_augment, self.interpolation = auto_augment, interpolation
        self.scale, self.hflip, self.color_jitter = tuple(scale), hflip, color_jitter
        self.splits = {"train": train_split, "val": val_split, "test": test_split}
        if backend not in ("pil", "dali"):
            raise PipelineError(f"data.backend must be pil or dali, not {backend!r}")
        # checked before DALI is needed: a policy without a DALI equivalent is refused on any machine
        self.dali: DaliAugment | None = dali_augment(auto_augment, interpolation) if backend == "dali" else None
        if self.dali is not None:
            require_dali()
        self.backend = backend
        augmentation = ((self.dali.record() if self.dali is not None else None) or auto_augment
                        or (f"color_jitter {color_jitter}" if color_jitter else "none"))
        # recorded: Lightning logs a datamodule's hparams with the model's (W&B config, hparams.yaml, checkpoint)
        self.save_hyperparameters({"eval_crop_pct": self.crop_pct, "backend": backend, "augmentation": augmentation,
                                   "interpolation": interpolation})
        self.manifest: Manifest = load_manifest(self.root)
        self.check()
        self.check_holdout()

    @property
    def num_classes(self) -> int:
        """Number of classes in the manifest (the CLI links it to the model's head)."""
        return self.manifest.num_classes

    def check(self, roles: tuple[str, ...] = ("train", "val")) -> None:
        """PipelineError unless the splits of ``roles`` are in the manifest and (for local roots) on disk.

        ``__init__`` checks train and val (what ``fit`` needs); the test split is checked when it is used, so a
        dataset without one (ImageNet) works with the default ``test_split``.
        """
        for role in roles:
            split = self.splits[role]
            if split is None:
                continue
            self.manifest.split(split)
            missing = self.manifest.missing_shards(split)
            if missing:
                raise PipelineError(
                    f"{len(missing)} {role} shard(s) of {self.root} are missing, e.g. {missing[0]}; "
                    "re-run `pipeline shards` with the same arguments to complete them"
                )

    def check_holdout(self) -> None:
        """PipelineError when an evaluated split is the held-out one but the train split is not the split it was
        carved from (e.g. flowers102's ``minival`` held out of ``trainval`` while training on ``train``, which
        still holds those samples)."""
        held = self.manifest.holdout
        train = self.splits["train"]
        if held is None or train is None or train == held["from"]:
            return
        for role in ("val", "test"):
            if self.splits[role] == held["split"]:
                raise PipelineError(
                    f"data.{role}_split {held['split']!r} of {self.root} was held out of {held['from']!r}, but "
                    f"data.train_split {train!r} may hold its samples; train on {held['from']!r}")

    def world(self) -> tuple[int, int]:
        """``(rank, world_size)``: from the attached trainer, else torch.distributed, else ``(0, 1)``."""
        if self.trainer is not None:
            return self.trainer.global_rank, self.trainer.world_size
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            return torch.distributed.get_rank(), torch.distributed.get_world_size()
        return 0, 1

    def setup(self, stage: str | None = None) -> None:
        """Check that the splits this stage uses give every rank at least one batch."""
        roles = {"fit": ("train", "val"), "validate": ("val",), "test": ("test",), "predict": ("test",)}
        roles = roles.get(stage or "fit", ())
        self.check(roles)
        for role in roles:
            if self.splits[role] is not None:
                self.loader(role)

    def train_dataloader(self) -> ShardLoader:
        """Exactly ⌊N / (world_size · batch_size)⌋ shuffled, augmented batches per rank per epoch, resumable."""
        return self.loader("train")

    def val_dataloader(self) -> ShardLoader:
        """Every val sample exactly once across ranks × workers."""
        return self.loader("val")

    def test_dataloader(self) -> ShardLoader:
        """Every test sample exactly once across ranks × workers."""
        return self.loader("test")

    def predict_dataloader(self) -> PredictLoader:
        """The test split (``data.test_split``, any split of the manifest) with each batch's sample keys."""
        return PredictLoader(self.loader("test", keys=True))

    def stream(self, role: str, *, keys: bool = False, world: tuple[int, int] | None = None) -> ShardStream:
        """The :class:`ShardStream` of ``role`` (train / val / test) for this rank (or ``world`` = (rank, size))."""
        split_name = self.splits[role]
        if split_name is None:
            raise PipelineError(f"no {role} split configured; set data.{role}_split to a split of {self.root}")
        split = self.manifest.split(split_name)
        train = role == "train"
        rank, world_size = world or self.world()
        transform = fast_transform(
            self.resolution, train=train, auto_augment=self.auto_augment, crop_pct=self.crop_pct,
            interpolation=self.interpolation, scale=self.scale, hflip=self.hflip, color_jitter=self.color_jitter,
        )
        return ShardStream(
            self.manifest.urls(split_name),
            [s.count for s in split.shards],
            SampleDecoder(transform),
            self.batch_size if train else self.eval_batch_size,
            train=train, rank=rank, world_size=world_size, seed=self.seed, shuffle_buffer=self.shuffle_buffer,
            keys=keys,
        )

    def loader(self, role: str, *, keys: bool = False, world: tuple[int, int] | None = None) -> ShardLoader:
        """The loader of ``role`` (train / val / test); ``keys=True`` adds each batch's sample keys (pil only).

        ``world`` = (rank, world size) builds another rank's loader (the CLI checks every rank's before DDP starts).
        """
        if self.backend == "dali":
            return self.dali_loader(role, world=world)
        stream = self.stream(role, keys=keys, world=world)
        split = self.manifest.split(self.splits[role])
        if role == "train":
            num_batches = stream.train_batches()
            if num_batches == 0:
                raise PipelineError(
                    f"train split {split.name!r} has {split.count} samples, fewer than world size "
                    f"{stream.world_size} × batch size {stream.batch_size}; lower data.batch_size"
                )
        else:
            num_batches = stream.eval_batches(self.num_workers)
            if num_batches == 0:
                raise PipelineError(
                    f"{role} split {split.name!r} ({split.count} samples) leaves rank {stream.rank} with nothing "
                    f"to evaluate with {stream.world_size} ranks × {max(self.num_workers, 1)} workers; "
                    "lower data.num_workers or use fewer ranks"
                )
        # epochs processed, not trainer.current_epoch: when a resumed run creates its iterator, current_epoch
        # still names the checkpoint's epoch, which would replay that epoch's order (a mid-epoch resume then
        # continues from the loader state Lightning restores, see ShardLoader.load_state_dict)
        trainer = self.trainer
        epoch_fn = (lambda: trainer.fit_loop.epoch_progress.current.processed) if trainer is not None else None
        # the trainer's epoch can end before the loader's (limit_train_batches): a state saved after its last
        # batch then starts the next epoch, as the resumed trainer will
        done_fn = (lambda: trainer.fit_loop.epoch_loop.batch_progress.is_last_batch) if trainer is not None else None
        return ShardLoader(
            stream, num_batches, num_workers=self.num_workers, name=f"{self.manifest.dataset}/{role}",
            epoch_fn=epoch_fn, pin_memory=torch.cuda.is_available(), epoch_done_fn=done_fn,
        )

    def dali_loader(self, role: str, world: tuple[int, int] | None = None) -> DaliLoader:
        """The DALI loader of ``role`` for this rank, or ``world`` = (rank, size) (same batch contract; see
        :mod:`pipeline.data.dali`)."""
        split = self.manifest.split(self.splits[role])
        rank, world_size = world or self.world()
        return DaliLoader(
            self.manifest.urls(split.name), split.count, train=role == "train", resolution=self.resolution,
            batch_size=self.batch_size if role == "train" else self.eval_batch_size, rank=rank,
            world_size=world_size, seed=self.seed, shuffle_buffer=self.shuffle_buffer, crop_pct=self.crop_pct,
            scale=self.scale, hflip=self.hflip, color_jitter=self.color_jitter, augment=self.dali,
            num_threads=max(self.num_workers, 1),
        )

    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        """Normalise the uint8 images of a batch on its device (Lightning calls this in fit, validate, test)."""
        return (normalize_images(batch[0]), *batch[1:])
