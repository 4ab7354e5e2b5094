"""Streaming in one process: exact eval plans, fixed train length, transforms, corrupt samples, clear errors."""

from __future__ import annotations

import itertools
import json
import math
import multiprocessing
import random
import time
from collections import Counter
from pathlib import Path

import pytest
import torch
from PIL import Image
from webdataset.writer import TarWriter

from pipeline.atomic import atomic_write_json
from pipeline.data.augment import AugmentationError
from pipeline.data.datamodule import ShardDataModule
from pipeline.data.loader import ShardLoader
from pipeline.data.plans import eval_plan, role_batches, train_plan
from pipeline.data.shard_manifest import Shard, Split, manifest_dict
from pipeline.data.sharding import write_shards
from pipeline.data.sources import get_source
from pipeline.data.stream import ShardStream
from pipeline.data.transforms import build_transform, decode_side, eval_geometry
from pipeline.errors import PipelineError, message_line
from tests.data.helpers import TinySource, jpeg_bytes


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("tiny")
    write_shards(TinySource({"train": 70, "val": 43}), out, shard_size=10)  # 7 train shards; val 10,10,10,10,3
    return out


@pytest.fixture(scope="module")
def digits(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The embedded digits (1,437 train samples in 8 shards), as the project's writer shards them."""
    out = tmp_path_factory.mktemp("digits")
    write_shards(get_source("digits", None), out)
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


@pytest.mark.parametrize("counts", [[10] * 7, [13, 1, 7, 30, 2], [70], [3, 3]])
@pytest.mark.parametrize(("world_size", "workers", "batch"), [(1, 1, 8), (2, 2, 4), (4, 2, 3), (8, 4, 1), (3, 1, 5)])
def test_train_plan_deals_every_sample_once_in_equal_batches(
    counts: list[int], world_size: int, workers: int, batch: int
) -> None:
    n = sum(counts)
    per_rank = n // (world_size * batch)
    if per_rank == 0:
        return
    plans = [train_plan(counts, world_size, workers, batch, seed=1, epoch=e) for e in range(2)]
    for plan in plans:
        assert len(plan) == world_size * workers
        seen = Counter((s, i) for pieces in plan for s, a, b in pieces for i in range(a, b))
        assert max(seen.values()) == 1 and len(seen) == per_rank * world_size * batch > n - world_size * batch
        for rank in range(world_size):  # each rank's roles together give exactly its batches
            sizes = [sum(b - a for _, a, b in plan[r * world_size + rank]) for r in range(workers)]
            assert sizes == [k * batch for k in role_batches(per_rank, workers)]
    if len(counts) > 1:
        assert plans[0] != plans[1]  # a new order every epoch


def keys_of(loader) -> list[str]:
    return [k for batch in loader for k in batch[3]]


def rank_loader(root: Path, rank: int, world_size: int, **kwargs) -> ShardLoader:
    """The train loader of ``rank`` of ``world_size`` (ranks simulated in one process; real DataLoader workers)."""
    dm = ShardDataModule(str(root), **{"resolution": 8, "crop_pct": 1, **kwargs})
    loader = dm.loader("train", keys=True)
    loader.dataset.rank, loader.dataset.world_size = rank, world_size
    loader.num_batches = loader.dataset.train_batches()
    return loader


@pytest.mark.parametrize(("world_size", "num_workers"), [(1, 0), (2, 2), (4, 2), (8, 4)])
def test_a_train_epoch_reads_every_sample_the_cut_allows_exactly_once(
    digits: Path, world_size: int, num_workers: int
) -> None:
    """Must show (issue 12): 100 % unique keys per epoch for ranks × workers (was 91 %, 73 %, 71 %, 68 %)."""
    batch = 32
    epochs = []
    loaders = [rank_loader(digits, r, world_size, batch_size=batch, num_workers=num_workers, shuffle_buffer=500)
               for r in range(world_size)]
    for _ in range(2):
        per_rank = [keys_of(loader) for loader in loaders]
        assert [len(k) for k in per_rank] == [1437 // (world_size * batch) * batch] * world_size  # equal batches
        keys = [k for ks in per_rank for k in ks]
        assert len(set(keys)) == len(keys) == 1437 // (world_size * batch) * world_size * batch  # 100 %
        epochs.append(keys)
    assert 1437 - len(epochs[0]) < world_size * batch  # the cut drops less than one global batch
    assert epochs[0] != epochs[1] and set(epochs[0]) != set(epochs[1])  # new order, a different cut each epoch


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
        assert len(set(epochs[-1])) == 64  # every sample the cut allows, once
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


def class_sorted(root: Path, classes: int = 10, per_shard: int = 40) -> Path:
    """Shards as an unshuffled writer would leave them: shard ``c`` holds only class ``c``."""
    write_raw(root, {"train": [[{"__key__": f"c{c}_{i:03d}", "jpg": jpeg_bytes((c, i, 0), size=(8, 8)),
                                 "cls": str(c).encode()} for i in range(per_shard)] for c in range(classes)]})
    return root


@pytest.mark.parametrize(("world_size", "num_workers"), [(1, 0), (2, 2)])
def test_shuffle_mixes_class_sorted_shards(tmp_path: Path, world_size: int, num_workers: int) -> None:
    """Batches from class-sorted shards mix classes: a batch of 8 holds at most 4.5 of one class on average
    (a uniform shuffle of 10 classes: ≈ 2.2; reading one shard at a time through the same 16-sample buffer,
    as the loader did before: 6.2 at 1 × 0 and 6.5 at 2 × 2), and no class runs longer than 12 in a row (26)."""
    root = class_sorted(tmp_path)
    top, runs = [], []
    for rank in range(world_size):
        loader = rank_loader(root, rank, world_size, batch_size=8, num_workers=num_workers, shuffle_buffer=16,
                             val_split=None, test_split=None)
        labels = [label for batch in loader for label in batch[1].tolist()]
        assert len(labels) == 400 // world_size
        top += [max(Counter(labels[i:i + 8]).values()) for i in range(0, len(labels), 8)]
        runs.append(max(len(list(run)) for _, run in itertools.groupby(labels)))
    assert sum(top) / len(top) <= 4.5 and max(runs) <= 12, (sum(top) / len(top), runs)


def test_fewer_shards_than_slots(tmp_path: Path) -> None:
    """3 shards for 4 ranks × 2 workers: slots share shards by range; still every sample once, equal batches."""
    write_shards(TinySource({"train": 45}), tmp_path, shard_size=15)
    per_rank = [keys_of(rank_loader(tmp_path, r, 4, batch_size=2, num_workers=2, val_split=None, test_split=None))
                for r in range(4)]
    assert [len(k) for k in per_rank] == [45 // 8 * 2] * 4
    keys = [k for ks in per_rank for k in ks]
    assert len(set(keys)) == len(keys) == 40


@pytest.mark.parametrize(("world_size", "rank", "num_workers", "stop"), [(1, 0, 0, 6), (1, 0, 2, 5), (2, 1, 3, 4)])
def test_train_loader_resumes_mid_epoch_exactly(
    tiny: Path, world_size: int, rank: int, num_workers: int, stop: int
) -> None:
    """A loader stopped after ``stop`` batches and restored from its state_dict in a new process-level loader
    yields the remaining batches of the uninterrupted epoch: same keys, same order, bit-identical augmented
    images (random crops, flips and colour jitter); the next epoch too."""
    kwargs = {"batch_size": 4, "num_workers": num_workers, "shuffle_buffer": 8, "resolution": 16}
    whole = rank_loader(tiny, rank, world_size, **kwargs)
    epochs = [list(whole) for _ in range(2)]

    first = rank_loader(tiny, rank, world_size, **kwargs)
    it = iter(first)
    head = [next(it) for _ in range(stop)]
    state = first.state_dict()
    assert state == {"epoch": 0, "batches": stop}
    del it
    resumed = rank_loader(tiny, rank, world_size, **kwargs)
    resumed.load_state_dict(state)
    tail = list(resumed)
    assert len(head) + len(tail) == len(epochs[0]) == len(whole)
    for got, want in zip(head + tail + list(resumed), epochs[0] + epochs[1], strict=True):
        assert got[3] == want[3] and torch.equal(got[0], want[0]) and torch.equal(got[1], want[1])
    assert not torch.equal(epochs[0][0][0], epochs[1][0][0])  # augmentation draws differ by epoch


def test_augmentation_leaves_the_callers_rngs_alone(tiny: Path) -> None:
    """Without workers the per-sample seeding runs in the training process: its RNG states are given back."""
    loader = rank_loader(tiny, 0, 1, batch_size=4, num_workers=0, resolution=16)
    torch.manual_seed(123)
    random.seed(123)
    expected = torch.rand(3), random.random()
    torch.manual_seed(123)
    random.seed(123)
    list(loader)
    assert torch.equal(torch.rand(3), expected[0]) and random.random() == expected[1]


def test_corrupt_train_samples_are_replaced_and_counted(tmp_path: Path) -> None:
    """A corrupt sample's place is filled by a spare re-reading: every batch stays full, the count is exact,
    and a rank keeps its batch count."""
    bad = [{"__key__": f"bad{i}", "jpg": b"not an image", "cls": b"0"} for i in range(4)]
    write_raw(tmp_path, {"train": [[good(i) for i in range(20)] + bad, [good(i) for i in range(20, 40)]]})
    loader = rank_loader(tmp_path, 0, 1, batch_size=4, num_workers=0, shuffle_buffer=4, val_split=None,
                         test_split=None)
    batches = list(loader)  # 44 samples, 11 batches: no cut, so every corrupt sample is met
    assert len(batches) == 11 and all(len(b[1]) == 4 for b in batches)
    keys = [k for b in batches for k in b[3]]
    assert not any(k.startswith("bad") for k in keys) and len(set(keys)) == 40  # all good ones + 4 repeats
    assert sum(int(b[2]) for b in batches) >= 4  # each corrupt one counted (a spare may meet one again)


@pytest.mark.parametrize(("resolution", "expected"), [(224, 0.875), (300, 0.904), (600, 0.949), (32, 0.5)])
def test_eval_crop_pct_follows_the_resolution_unless_set(tiny: Path, resolution: int, expected: float) -> None:
    dm = ShardDataModule(str(tiny), resolution=resolution)
    assert round(dm.crop_pct, 3) == expected and dm.hparams["eval_crop_pct"] == dm.crop_pct
    transform = dm.stream("val").decode.transform
    assert transform.crop_pct == dm.crop_pct  # the eval transform in use: shorter side to res / crop_pct
    assert eval_geometry((500, 375), resolution, transform.crop_pct)[1] == math.floor(resolution / dm.crop_pct) \
        == resolution + 32
    assert ShardDataModule(str(tiny), resolution=resolution, crop_pct=1.0).crop_pct == 1.0
    with pytest.raises(PipelineError, match="crop_pct"):
        ShardDataModule(str(tiny), crop_pct=1.5)


def augment_bug(sample: dict) -> tuple[torch.Tensor, int]:
    """A sample decoder whose augmentation op fails (as a broken op would, on every sample)."""
    raise AugmentationError("augmentation op Rotate (magnitude 9) failed on a (3, 8, 8) torch.uint8 image: "
                            "IndexError: index 3 is out of bounds")


@pytest.mark.parametrize("workers", [0, 1])
def test_an_augmentation_error_stops_the_epoch_in_one_line(tmp_path: Path, workers: int) -> None:
    """Not a corrupt sample: the error leaves the loader (from a worker too) and the CLI prints its own line."""
    write_raw(tmp_path, {"train": [[good(i) for i in range(8)]]})
    stream = ShardStream([str(tmp_path / "train-000000.tar")], [8], augment_bug, 4, train=True, shuffle_buffer=4)
    with pytest.raises(AugmentationError) as err:
        list(ShardLoader(stream, stream.train_batches(), num_workers=workers))
    assert message_line(err.value) == ("augmentation op Rotate (magnitude 9) failed on a (3, 8, 8) torch.uint8 "
                                       "image: IndexError: index 3 is out of bounds")
