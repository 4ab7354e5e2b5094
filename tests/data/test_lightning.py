"""ShardDataModule inside a real Lightning Trainer: DDP (2 forked CPU ranks, gloo) and LightningCLI config files."""

from __future__ import annotations

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
