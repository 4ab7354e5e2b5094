"""Shard writers: each real on-disk format round-trips; resume, determinism, bad images, errors."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image
from sklearn.datasets import load_sample_images

from pipeline.data.shard_manifest import load_manifest
from pipeline.data.sharding import write_shards
from pipeline.data.sources import get_source
from pipeline.errors import PipelineError
from tests.data.helpers import (
    DEVKIT_IDS,
    WNIDS,
    WORDS,
    TinySource,
    jpeg_bytes,
    read_split,
    write_cifar100,
    write_flowers,
    write_imagenet,
)


def labels_of(samples: dict[str, dict[str, bytes]]) -> dict[str, int]:
    return {k: int(v["cls"]) for k, v in samples.items()}


@pytest.mark.parametrize("flat_val", [True, False])
def test_imagenet_round_trip(tmp_path: Path, flat_val: bool) -> None:
    val_labels = write_imagenet(tmp_path / "src", per_class=4, val_per_class=2, flat_val=flat_val)
    out = tmp_path / "out"
    manifest = write_shards(get_source("imagenet", tmp_path / "src"), out, shard_size=5, workers=2)

    assert manifest.classes == tuple(WNIDS)  # sorted wnid order, whatever the devkit's IDs say
    assert manifest.splits["train"].count == 12 and len(manifest.splits["train"].shards) == 3
    train = read_split(out, "train")
    assert labels_of(train) == {f"{w}_{i}": c for c, w in enumerate(WNIDS) for i in range(4)}
    assert all(Image.open(io.BytesIO(s["jpg"])).format == "JPEG" for s in train.values())
    assert labels_of(read_split(out, "val")) == val_labels
    assert manifest.splits["val"].count == 6
    if flat_val:  # labels came through the devkit's ILSVRC2012_ID → wnid mapping, names kept
        assert set(DEVKIT_IDS.values()) == set(WNIDS)
        assert manifest.extra["class_names"] == [WORDS[w] for w in WNIDS]
    assert load_manifest(out) == manifest


def test_imagenet_flat_val_needs_devkit(tmp_path: Path) -> None:
    write_imagenet(tmp_path, flat_val=True)
    for f in (tmp_path / "ILSVRC2012_devkit_t12" / "data").iterdir():
        f.unlink()
    (tmp_path / "ILSVRC2012_devkit_t12" / "data").rmdir()
    (tmp_path / "ILSVRC2012_devkit_t12").rmdir()
    with pytest.raises(PipelineError, match="devkit"):
        write_shards(get_source("imagenet", tmp_path), tmp_path / "out")


def test_cifar100_round_trip(tmp_path: Path) -> None:
    import pickle

    folder = write_cifar100(tmp_path, n_train=30, n_test=10)
    out = tmp_path / "out"
    manifest = write_shards(get_source("cifar100", tmp_path), out, shard_size=8)  # parent of cifar-100-python

    assert manifest.num_classes == 100 and manifest.classes[:2] == ("fine0", "fine1")
    assert manifest.extra["coarse_classes"][:2] == ["coarse0", "coarse1"]
    assert [s.count for s in manifest.splits["train"].shards] == [8, 8, 8, 6]
    raw = pickle.loads((folder / "train").read_bytes())
    train = read_split(out, "train")
    assert len(train) == 30
    for key, sample in train.items():
        i = int(key.split("_")[1])
        assert int(sample["cls"]) == raw[b"fine_labels"][i] and int(sample["coarse.cls"]) == raw[b"coarse_labels"][i]
        pixels = list(Image.open(io.BytesIO(sample["png"])).convert("RGB").getdata())
        r, g, b = pixels[0]
        assert (r, g, b) == (raw[b"data"][i][0], raw[b"data"][i][1024], raw[b"data"][i][2048])  # planes R, G, B
    assert set(read_split(out, "test")) == {f"test_{i:05d}" for i in range(10)}


def test_flowers102_round_trip(tmp_path: Path) -> None:
    ids = write_flowers(tmp_path / "src", n_images=12, n_classes=3)
    out = tmp_path / "out"
    manifest = write_shards(get_source("flowers102", tmp_path / "src"), out)

    assert manifest.classes == ("1", "2", "3")
    for split, field in (("train", "trnid"), ("val", "valid"), ("test", "tstid")):
        got = labels_of(read_split(out, split))
        assert got == {f"image_{i:05d}": (i - 1) % 3 for i in ids[field]}  # 1-based in the file, 0-based stored


def test_digits_cli_fresh_install(tmp_path: Path) -> None:
    out = tmp_path / "digits"
    proc = subprocess.run([sys.executable, "-m", "pipeline.cli", "shards", "digits", "--out", str(out)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "images/s" in proc.stderr
    manifest = load_manifest(out)
    assert {n: s.count for n, s in manifest.splits.items()} == {"train": 1437, "val": 180, "test": 180}
    assert manifest.num_classes == 10 and manifest.skipped == 0
    keys = [set(read_split(out, s)) for s in ("train", "val", "test")]
    assert sum(map(len, keys)) == 1797 and len(set.union(*keys)) == 1797  # disjoint splits


def test_cli_errors(tmp_path: Path) -> None:
    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "pipeline.cli", "shards", *args],
                              capture_output=True, text=True, timeout=120)

    proc = run("imagenet", "--out", str(tmp_path / "o"))
    assert proc.returncode == 2 and "needs --src" in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
    proc = run("flowers102", "--src", str(tmp_path / "nope"), "--out", str(tmp_path / "o"))
    assert proc.returncode == 2 and "does not exist" in proc.stderr
    proc = run("digits", "--out", str(tmp_path / "q"), "--jpeg-quality", "101")
    assert proc.returncode == 2 and "--jpeg-quality must be 1…100" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and not (tmp_path / "q").exists()


def test_resume_skips_complete_shards_and_is_deterministic(tmp_path: Path) -> None:
    source = TinySource({"train": 25, "val": 7})
    out = tmp_path / "out"
    first = write_shards(source, out, shard_size=10, workers=2, seed=3)
    shards = sorted(out.glob("*.tar"))
    before = {p.name: p.stat().st_mtime_ns for p in shards}
    (out / "train-000001.tar").unlink()  # as if the run was killed while writing it
    (out / ".train-000001.tar.x1y2.tmp").write_bytes(b"half a shard")  # atomic_write's temp name

    second = write_shards(source, out, shard_size=10, workers=1, seed=3)
    after = {p.name: p.stat().st_mtime_ns for p in sorted(out.glob("*.tar"))}
    assert {n for n in after if after[n] != before.get(n)} == {"train-000001.tar"}
    assert not list(out.glob(".*.tmp"))
    assert second.content_hash == first.content_hash  # same args ⇒ byte-identical shards

    other = write_shards(source, tmp_path / "seed4", shard_size=10, seed=4)
    assert other.content_hash != first.content_hash
    assert set(read_split(tmp_path / "seed4", "train")) == set(read_split(out, "train"))

    with pytest.raises(PipelineError, match="different seed"):
        write_shards(source, out, shard_size=10, seed=5)


def test_undecodable_source_image_is_left_out_and_counted(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    write_imagenet(tmp_path / "src", per_class=3, flat_val=False)
    (tmp_path / "src" / "train" / WNIDS[1] / f"{WNIDS[1]}_1.JPEG").write_bytes(b"\xff\xd8 not really a jpeg")
    (tmp_path / "src" / "train" / WNIDS[2] / f"{WNIDS[2]}_0.JPEG").write_bytes(jpeg_bytes((1, 2, 3))[:60])
    manifest = write_shards(get_source("imagenet", tmp_path / "src"), tmp_path / "out", shard_size=4, workers=2)

    assert manifest.splits["train"].count == 7 and manifest.skipped == 2
    assert set(manifest.splits["train"].skipped_keys) == {f"{WNIDS[1]}_1", f"{WNIDS[2]}_0"}
    assert f"{WNIDS[1]}_1" not in read_split(tmp_path / "out", "train")
    assert "does not decode" in caplog.text
    on_disk = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert on_disk["skipped"] == 2 and on_disk["splits"]["train"]["skipped"] == 2


def test_max_side_downscales_keeping_aspect_and_fixes_cmyk(tmp_path: Path) -> None:
    write_imagenet(tmp_path / "src", per_class=1, flat_val=False)
    big = tmp_path / "src" / "train" / WNIDS[0] / f"{WNIDS[0]}_0.JPEG"
    buf = io.BytesIO()
    Image.new("RGB", (400, 200), (200, 10, 10)).save(buf, format="JPEG")
    big.write_bytes(buf.getvalue())
    cmyk = tmp_path / "src" / "train" / WNIDS[1] / f"{WNIDS[1]}_0.JPEG"
    cmyk.write_bytes(jpeg_bytes((0, 0, 0), mode="CMYK"))
    out = tmp_path / "out"
    write_shards(get_source("imagenet", tmp_path / "src"), out, max_side=100)

    train = read_split(out, "train")
    img = Image.open(io.BytesIO(train[f"{WNIDS[0]}_0"]["jpg"]))
    assert img.size == (100, 50)
    assert Image.open(io.BytesIO(train[f"{WNIDS[1]}_0"]["jpg"])).mode == "RGB"


def test_jpeg_quality_of_downscaled_images_is_planned(tmp_path: Path) -> None:
    write_imagenet(tmp_path / "src", per_class=1, flat_val=False)
    photo = Image.fromarray(load_sample_images().images[0])  # real detail: quality changes the size
    for wnid in WNIDS:
        photo.save(tmp_path / "src" / "train" / wnid / f"{wnid}_0.JPEG", quality=95)
    source = get_source("imagenet", tmp_path / "src")
    sizes = {}
    for quality in (95, 90, 50):
        write_shards(source, tmp_path / f"q{quality}", max_side=320, jpeg_quality=quality)
        sizes[quality] = sum(len(s["jpg"]) for s in read_split(tmp_path / f"q{quality}", "train").values())
        plan = json.loads((tmp_path / f"q{quality}" / "manifest.json").read_text())["writer"]
        assert plan["jpeg_quality"] == quality
    assert sizes[95] > sizes[90] > sizes[50]
    assert write_shards(source, tmp_path / "default", max_side=320).content_hash == \
        write_shards(source, tmp_path / "q90", max_side=320, jpeg_quality=90).content_hash  # 90 by default
    with pytest.raises(PipelineError, match="different jpeg_quality"):
        write_shards(source, tmp_path / "q90", max_side=320, jpeg_quality=95)
    plan_path = tmp_path / "q95" / ".parts" / "plan.json"  # planned before the option existed: it was 95
    old_plan = json.loads(plan_path.read_text())
    del old_plan["jpeg_quality"]
    plan_path.write_text(json.dumps(old_plan))
    write_shards(source, tmp_path / "q95", max_side=320, jpeg_quality=95)
    with pytest.raises(PipelineError, match=r"--jpeg-quality must be 1…100 .*not 0"):
        write_shards(source, tmp_path / "q0", max_side=320, jpeg_quality=0)
    assert not (tmp_path / "q0").exists()


def test_shards_are_world_readable_like_any_output(tmp_path: Path) -> None:
    old = os.umask(0o022)
    try:
        write_shards(TinySource({"train": 3}), tmp_path / "out")
    finally:
        os.umask(old)
    assert (tmp_path / "out" / "train-000000.tar").stat().st_mode & 0o777 == 0o644
    assert (tmp_path / "out" / "manifest.json").stat().st_mode & 0o777 == 0o644
