"""Streaming in one process: exact eval plans, fixed train length, transforms, corrupt samples, clear errors."""

from __future__ import annotations

import json
import multiprocessing
import time
from collections import Counter
from pathlib import Path

import pytest
import torch
from PIL import Image
from webdataset.writer import TarWriter

from pipeline.data.datamodule import ShardDataModule
from pipeline.data.manifest import Shard, Split, manifest_dict
from pipeline.data.sharding import write_shards
from pipeline.data.stream import eval_plan, train_positions
from pipeline.data.transforms import build_transform, decode_side
from pipeline.errors import PipelineError
from pipeline.io import atomic_write_json
from tests.data.helpers import TinySource, jpeg_bytes


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("tiny")
    write_shards(TinySource({"train": 70, "val": 43}), out, shard_size=10)  # 7 train shards; val 10,10,10,10,3
    return out


@pytest.mark.parametrize("num_shards", [1, 2, 3, 5, 7, 8, 13])
@pytest.mark.parametrize("num_slots", [1, 2, 3, 4, 6])
def test_eval_plan_reads_every_sample_exactly_once(num_shards: int, num_slots: int) -> None:
    counts = [10 + 3 * i for i in range(num_shards)]
    seen = Counter()
    for reads in eval_plan(num_shards, num_slots):
        for shard, stride, offset in reads:
            seen.update((shard, i) for i in range(offset, counts[shard], stride))
    assert seen == Counter({(s, i): 1 for s in range(num_shards) for i in range(counts[s])})


def test_train_positions_disjoint_within_a_round_and_never_empty() -> None:
    def first(slot: int, n: int, num_shards: int = 7, num_slots: int = 4, epoch: int = 0) -> list[int]:
        it = train_positions(num_shards, slot, num_slots, seed=1, epoch=epoch)
        return [next(it) for _ in range(n)]

    firsts = [first(j, 1) for j in range(4)]
    assert len({s[0] for s in firsts}) == 4  # distinct shards for the 4 slots
    one_round = [s for j in range(4) for s in first(j, 2)[: 2 if j < 3 else 1]]
    assert sorted(one_round) == list(range(7))  # the first round gives each shard to exactly one slot
    assert first(0, 6) != first(0, 6, epoch=1)  # a new order every epoch
    assert first(3, 3, num_shards=1, num_slots=4) == [0, 0, 0]  # fewer shards than slots: still data


def keys_of(loader) -> list[str]:
    return [k for batch in loader for k in batch[3]]


@pytest.mark.parametrize("num_workers", [0, 2])
def test_single_process_epochs_and_exact_eval(tiny: Path, num_workers: int) -> None:
    dm = ShardDataModule(str(tiny), resolution=8, batch_size=8, num_workers=num_workers, shuffle_buffer=16, crop_pct=1)
    assert dm.num_classes == 5
    train = dm.loader("train", keys=True)
    assert len(train) == 70 // 8
    epochs = []
    for _ in range(2):
        batches = list(train)
        assert len(batches) == 8
        for images, labels, skipped, keys in batches:
            assert images.shape == (8, 3, 8, 8) and images.dtype == torch.uint8  # normalised on the device
            assert labels.dtype == torch.long and skipped.dtype == torch.long and skipped.shape == ()
            assert [int(k[-4:]) % 5 for k in keys] == labels.tolist()
        epochs.append([k for b in batches for k in b[3]])
        # an epoch reads (nearly) every sample once: repeats only where a slot spills into the next round's shard
        assert len(set(epochs[-1])) >= 64 - 10
    assert epochs[0] != epochs[1]
    assert train.last_epoch["images"] == 64 and train.last_epoch["images_per_s"] > 0
    it = iter(train)
    for _ in range(len(train)):  # as Lightning does: no next() after the last batch
        next(it)
    assert train.last_epoch["epoch"] == 2 and not multiprocessing.active_children()  # logged, workers gone

    val = dm.loader("val", keys=True)
    keys = keys_of(val)
    assert sorted(keys) == [f"val_{i:04d}" for i in range(43)]
    assert len(val) == sum(1 for _ in val)


def test_transforms_from_timm(tiny: Path) -> None:
    for aa in ("original", "rand-m9-mstd0.5"):
        t = build_transform(32, train=True, auto_augment=aa)
        assert t(Image.new("RGB", (50, 40), (9, 99, 199))).shape == (3, 32, 32)
    eval_t = build_transform(32, train=False, crop_pct=0.875)
    assert [type(s).__name__ for s in eval_t.transforms][:2] == ["Resize", "CenterCrop"]
    assert eval_t.transforms[0].size == decode_side(32, 0.875) == 36  # resize, then center-crop 32



def write_raw(root: Path, shards: dict[str, list[list[dict]]], declared: dict[str, list[int]] | None = None) -> None:
    """Shards with hand-made (possibly corrupt) samples and a manifest declaring their counts."""
    root.mkdir(parents=True, exist_ok=True)
    splits = {}
    for split, tars in shards.items():
        entries = []
        for i, samples in enumerate(tars):
            name = f"{split}-{i:06d}.tar"
            with TarWriter(str(root / name), encoder=False) as tar:
                for s in samples:
                    tar.write(s)
            count = declared[split][i] if declared else len(samples)
            entries.append(Shard(name, count, "0" * 64))
        splits[split] = Split(split, tuple(entries))
    atomic_write_json(root / "manifest.json", manifest_dict(
        dataset="raw", classes=["a", "b"], splits=splits, source={}, writer={}))


def good(i: int) -> dict:
    return {"__key__": f"s{i:03d}", "jpg": jpeg_bytes((i, 0, 0)), "cls": b"1"}


def test_corrupt_samples_are_skipped_counted_and_fast(tmp_path: Path) -> None:
    shard0 = [good(0), {"__key__": "bad_jpeg", "jpg": b"\xff\xd8\xff garbage", "cls": b"0"}, good(1),
              {"__key__": "no_cls", "jpg": jpeg_bytes((5, 5, 5))}, good(2)]
    shard1 = [good(i) for i in range(10, 30)]
    shard2 = [{"__key__": f"bad{i}", "jpg": b"not an image", "cls": b"0"} for i in range(20)]
    write_raw(tmp_path, {"val": [shard0, shard1, shard2]})
    tar = tmp_path / "val-000001.tar"
    tar.write_bytes(tar.read_bytes()[: tar.stat().st_size // 2])  # truncated mid-shard

    dm = ShardDataModule(str(tmp_path), resolution=8, batch_size=4, num_workers=0, train_split=None, test_split=None)
    start = time.perf_counter()
    batches = list(dm.loader("val", keys=True))
    elapsed = time.perf_counter() - start
    good_keys = [k for b in batches for k in b[3]]
    skipped = sum(int(b[2]) for b in batches)
    assert {"s000", "s001", "s002"} <= set(good_keys) and "bad_jpeg" not in good_keys and "no_cls" not in good_keys
    assert len(good_keys) + skipped == 5 + 20 + 20  # every declared sample is either delivered or counted
    assert 3 + 20 < skipped < 45  # 1 bad jpeg + 1 missing cls + 20 bad + what the truncated tar lost
    assert all(b[2].dtype == torch.long for b in batches)
    assert elapsed < 5  # webdataset's warn_and_continue would sleep 0.5 s per bad sample (> 11 s here)


def test_truncated_tar_in_training_is_counted_and_length_kept(tmp_path: Path) -> None:
    write_raw(tmp_path, {"train": [[good(i) for i in range(20)], [good(i) for i in range(20, 40)]]})
    tar = tmp_path / "train-000001.tar"
    tar.write_bytes(tar.read_bytes()[:5000])
    dm = ShardDataModule(str(tmp_path), resolution=8, batch_size=4, num_workers=0, shuffle_buffer=4,
                         val_split=None, test_split=None)
    loader = dm.loader("train")
    batches = list(loader)
    assert len(batches) == len(loader) == 10  # the endless stream keeps the length
    assert loader.last_epoch["skipped"] > 0


def test_errors_are_clear_and_early(tiny: Path, tmp_path: Path) -> None:
    with pytest.raises(PipelineError, match=r"no shard manifest.*pipeline shards"):
        ShardDataModule(str(tmp_path / "nowhere"))
    (tmp_path / "manifest.json").write_text("{ not json")
    with pytest.raises(PipelineError, match="cannot read shard manifest"):
        ShardDataModule(str(tmp_path))
    (tmp_path / "manifest.json").write_text(json.dumps({"format_version": 1, "splits": {}}))
    with pytest.raises(PipelineError, match="not a shard manifest"):
        ShardDataModule(str(tmp_path))

    copy = tmp_path / "copy"
    copy.mkdir()
    for f in tiny.iterdir():
        if f.is_file() and f.name != "train-000003.tar":
            (copy / f.name).write_bytes(f.read_bytes())
    with pytest.raises(PipelineError, match=r"1 train shard.*missing.*train-000003.tar"):
        ShardDataModule(str(copy))
    with pytest.raises(PipelineError, match=r"no split 'valid'.*train, val"):
        ShardDataModule(str(tiny), val_split="valid")
    with pytest.raises(PipelineError, match=r"no split 'test'.*train, val"):
        ShardDataModule(str(tiny)).setup("test")  # no test split: an error when testing, not before
    dm = ShardDataModule(str(tiny), batch_size=71)
    with pytest.raises(PipelineError, match="fewer than world size 1 × batch size 71"):
        dm.setup("fit")


def test_url_template_root_reads_through_a_command(tiny: Path) -> None:
    """Object stores work through their CLI: the manifest and shards are read by ``pipe:cat …/{}``."""
    dm = ShardDataModule(f"pipe:cat {tiny}/{{}}", resolution=8, batch_size=8, num_workers=0, crop_pct=1)
    assert dm.num_classes == 5 and dm.manifest.urls("val")[0] == f"pipe:cat {tiny}/val-000000.tar"
    assert sorted(keys_of(dm.loader("val", keys=True))) == [f"val_{i:04d}" for i in range(43)]
    with pytest.raises(PipelineError, match="cannot read shard manifest"):
        ShardDataModule(f"pipe:cat {tiny}/missing-{{}}")
