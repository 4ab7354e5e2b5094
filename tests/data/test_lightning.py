"""ShardDataModule inside a real Lightning Trainer: DDP (2 forked CPU ranks, gloo) and LightningCLI config files."""

from __future__ import annotations

import contextlib
import json
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch
import torch.distributed as dist
import yaml
from jsonargparse import ArgumentParser

from pipeline.data.datamodule import ShardDataModule
from pipeline.data.sharding import write_shards
from tests.data.helpers import TinySource

CONFIGS = sorted((Path(__file__).parents[2] / "configs" / "data").glob("*.yaml"))


class Probe(pl.LightningModule):
    """A linear classifier that records what each rank's loaders delivered."""

    def __init__(self, num_classes: int, out: str) -> None:
        super().__init__()
        self.net = torch.nn.Linear(3 * 8 * 8, num_classes)
        self.out = out
        self.steps: list[int] = []
        self.labels: list[list[int]] = []
        self.val_counts: list[int] = []
        self.skipped = 0

    def training_step(self, batch: tuple, batch_idx: int) -> torch.Tensor:
        images, labels, skipped = batch
        if batch_idx == 0:
            self.steps.append(0)
            self.labels.append([])
        self.steps[-1] += 1
        self.labels[-1] += labels.tolist()
        self.skipped += int(skipped)
        return torch.nn.functional.cross_entropy(self.net(images.flatten(1)), labels)

    def on_validation_epoch_start(self) -> None:
        self.val_counts.append(0)

    def validation_step(self, batch: tuple, batch_idx: int) -> None:
        self.val_counts[-1] += len(batch[1])

    def on_fit_end(self) -> None:
        record = {"steps": self.steps, "labels": self.labels, "val": self.val_counts, "skipped": self.skipped,
                  "last_epoch": self.trainer.train_dataloader.last_epoch["epoch"]}
        gathered: list = [None] * dist.get_world_size()
        dist.all_gather_object(gathered, record)
        if self.global_rank == 0:
            Path(self.out).write_text(json.dumps(gathered))

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.1)


@pytest.mark.slow
def test_trainer_ddp_two_ranks(tmp_path: Path) -> None:
    write_shards(TinySource({"train": 70, "val": 43}), tmp_path / "shards", shard_size=10)
    dm = ShardDataModule(str(tmp_path / "shards"), resolution=8, batch_size=4, num_workers=1, shuffle_buffer=8,
                         crop_pct=1.0)
    out = tmp_path / "ranks.json"
    trainer = pl.Trainer(accelerator="cpu", devices=2, strategy="ddp_fork", max_epochs=2, logger=False,
                         enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False)
    trainer.fit(Probe(dm.num_classes, str(out)), dm)

    ranks = json.loads(out.read_text())
    assert [r["steps"] for r in ranks] == [[8, 8], [8, 8]]  # ⌊70 / (2 · 4)⌋ on both ranks, every epoch
    assert [sum(r["val"][-1] for r in ranks)] == [43]  # the last validation saw each sample once
    assert all(r["labels"][0] != r["labels"][1] for r in ranks)  # trainer's epoch reached the stream
    assert all(r["last_epoch"] == 1 and r["skipped"] == 0 for r in ranks)


@pytest.mark.parametrize("path", CONFIGS, ids=[p.stem for p in CONFIGS])
def test_data_configs_parse_as_datamodule_arguments(path: Path) -> None:
    parser = ArgumentParser()
    parser.add_class_arguments(ShardDataModule, "data")
    cfg = parser.parse_object(yaml.safe_load(path.read_text()))
    assert cfg.data.root and cfg.data.val_split


class Recorder(pl.LightningModule):
    """A linear classifier that records every training sample it sees: (epoch, label, augmented image sum)."""

    def __init__(self) -> None:
        super().__init__()
        self.net = torch.nn.Linear(3 * 8 * 8, 5)
        self.seen: list[tuple[int, int, float]] = []

    def training_step(self, batch: tuple, batch_idx: int) -> torch.Tensor:
        images, labels, _ = batch
        self.seen += [(self.current_epoch, int(y), float(x.sum())) for x, y in zip(images, labels, strict=True)]
        return torch.nn.functional.cross_entropy(self.net(images.flatten(1)), labels)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.1)


class Stop(Exception):
    """Raised after the checkpoint: the process ends there, as a preempted job would."""


class SaveAndStop(pl.Callback):
    """Save a checkpoint at the end of global step ``step`` and stop (what the requeue callback does)."""

    def __init__(self, step: int, path: Path) -> None:
        self.step, self.path = step, path

    def on_train_batch_end(self, trainer: pl.Trainer, *args: object) -> None:
        if trainer.global_step == self.step:
            trainer.save_checkpoint(self.path)
            raise Stop


@pytest.mark.parametrize("stop", [7, 5, 10, 3])
def test_lightning_resumes_the_loader_at_any_batch(tmp_path: Path, stop: int) -> None:
    """A run stopped after any batch — mid-epoch (7, 3), at the last batch of a ``limit_train_batches`` epoch
    (5, 10) — and resumed from its checkpoint trains on the same samples in the same order with the same
    augmentation draws as the uninterrupted run (Lightning saves and restores the loader's state_dict)."""
    write_shards(TinySource({"train": 70, "val": 10}), tmp_path / "shards", shard_size=10)

    def fit(*callbacks: pl.Callback, ckpt_path: Path | None = None) -> Recorder:
        dm = ShardDataModule(str(tmp_path / "shards"), resolution=8, batch_size=4, num_workers=2, shuffle_buffer=8,
                             test_split=None)
        model = Recorder()
        trainer = pl.Trainer(accelerator="cpu", devices=1, max_epochs=3, limit_train_batches=5, limit_val_batches=1,
                             logger=False, enable_checkpointing=False, enable_progress_bar=False,
                             enable_model_summary=False, callbacks=list(callbacks), num_sanity_val_steps=0)
        with pytest.raises(Stop) if callbacks else contextlib.nullcontext():
            trainer.fit(model, dm, ckpt_path=ckpt_path)
        return model

    whole = fit().seen
    assert len(whole) == 3 * 5 * 4
    ckpt = tmp_path / "stop.ckpt"
    first = fit(SaveAndStop(stop, ckpt)).seen
    assert len(first) == stop * 4
    rest = fit(ckpt_path=ckpt).seen
    assert first + rest == whole
