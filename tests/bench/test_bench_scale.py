"""The scale benchmark on its tiny setting: the real commands and loaders, exact coverage, and the table."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.bench_scale import TINY, run
from pipeline.data.shard_manifest import load_manifest
from pipeline.data.sources import get_source


@pytest.mark.slow
def test_scale_benchmark_tiny_covers_every_slot_exactly(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    big, small = run(TINY, tmp_path)
    # 1,200 train images less 80 held out, at world 8 × batch 8: ⌊1120 / 64⌋ = 17 batches per rank, 1,088 read,
    # the cut 32
    assert big.train.batches == [17] * 8
    assert (big.train.read, big.train.distinct, big.train.duplicates, big.train.missing) == (1088, 1088, 0, 32)
    assert big.train.cut == 32
    # 1/10: 120 − 8 images, one batch per rank, 48 cut
    assert small.train.batches == [1] * 8
    assert (small.train.read, small.train.duplicates, small.train.missing, small.train.cut) == (64, 0, 48, 48)
    # minival (the selection split): every one of the 80 (8) held-out samples once
    assert (big.minival.read, big.minival.distinct, big.minival.missing) == (80, 80, 0)
    assert (small.minival.read, small.minival.distinct, small.minival.missing) == (8, 8, 0)
    # val: every one of the 160 (16) samples once over 8 ranks × 2 workers
    assert (big.val.read, big.val.distinct, big.val.missing) == (160, 160, 0)
    assert (small.val.read, small.val.distinct, small.val.missing) == (16, 16, 0)
    # 20 per shard: ⌈1120/20⌉ + ⌈80/20⌉ + ⌈160/20⌉, ⌈112/20⌉ + ⌈8/20⌉ + ⌈16/20⌉
    assert big.shards == 56 + 4 + 8 and small.shards == 6 + 1 + 1
    assert big.resume_at == (8, 17) and big.writer_rss_mib > 0 and len(big.first_batch_s) == 2
    # the generated tree is what `pipeline shards imagenet` reads: flat val labelled through the devkit's IDs
    tree = tmp_path / "n1200-v160-c4" / "tree"
    val_labels = [r.label for r in get_source("imagenet", tree).records("val")]
    assert val_labels == [(3 * i) % 4 for i in range(160)]
    manifest = load_manifest(str(tmp_path / "n1200-v160-c4" / "shards-20"))
    assert manifest.num_classes == 4 and manifest.split("train").count == 1120
    assert manifest.split("minival").count == 80
    out = capsys.readouterr().out
    assert "| figure | 1,200 train | 120 train | ratio | limits |" in out
    assert "| train epoch, 8 × 2 slots: read / distinct / duplicates / missing (cut) | 1,088 / 1,088 / 0 / 32 (32) " \
           "| 64 / 64 / 0 / 48 (48) | 17.00× |" in out
    assert "| `pipeline report` over 20 / 2 records (s) |" in out and "machine: " in out
