"""Held-out selection data (issue 17): ``pipeline shards … --holdout N|F`` writes a seeded ``minival`` split carved
from train, and no train epoch (any rank, any worker) ever reads one of its samples."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline import cli
from pipeline.data.datamodule import ShardDataModule
from pipeline.data.holdout import Holdout
from pipeline.data.shard_manifest import load_manifest
from pipeline.data.sharding import write_shards
from pipeline.data.sources import get_source
from pipeline.errors import PipelineError
from tests.data.helpers import TinySource, read_split

DIGITS_TRAIN = 1437


@pytest.fixture(scope="module")
def held(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Digits with 197 training samples held out: train keeps 1,240 = 31 global batches of 2 ranks × 20."""
    out = tmp_path_factory.mktemp("held")
    write_shards(get_source("digits", None), out, holdout=Holdout(197))
    return out


def test_holdout_counts_disjointness_and_manifest(held: Path, tmp_path: Path) -> None:
    manifest = load_manifest(held)
    counts = {name: split.count for name, split in manifest.splits.items()}
    assert counts == {"train": DIGITS_TRAIN - 197, "val": 180, "test": 180, "minival": 197}
    assert manifest.holdout == {"split": "minival", "from": "train", "count": 197, "from_count": DIGITS_TRAIN - 197,
                                "requested": 197, "seed": 0}
    train, minival = set(read_split(held, "train")), set(read_split(held, "minival"))
    assert not train & minival  # by __key__
    plain = tmp_path / "plain"
    write_shards(get_source("digits", None), plain)
    assert train | minival == set(read_split(plain, "train"))  # carved from train, nothing lost
    assert read_split(held, "val") == read_split(plain, "val") and read_split(held, "test") == read_split(plain, "test")


def test_holdout_is_seeded(held: Path, tmp_path: Path) -> None:
    again = write_shards(get_source("digits", None), tmp_path / "again", holdout=Holdout(197))
    assert again.content_hash == load_manifest(held).content_hash  # same seed ⇒ byte-identical shards
    other = write_shards(get_source("digits", None), tmp_path / "other", holdout=Holdout(197, seed=1))
    keys = set(read_split(tmp_path / "other", "minival"))
    assert other.holdout["seed"] == 1 and len(keys) == 197 and keys != set(read_split(held, "minival"))
    fraction = write_shards(get_source("digits", None), tmp_path / "fraction", holdout=Holdout(0.1))
    assert fraction.splits["minival"].count == round(0.1 * DIGITS_TRAIN) == 144
    assert fraction.holdout["requested"] == 0.1
    with pytest.raises(PipelineError, match="different holdout"):  # a resume with another holdout mixes nothing
        write_shards(get_source("digits", None), tmp_path / "again", holdout=Holdout(196))


@pytest.mark.parametrize(("args", "message"), [
    (("--holdout", "1437"), "--holdout 1437 holds out 1437 of the 1437 train samples"),
    (("--holdout", "5000"), "--holdout 5000 holds out 5000 of the 1437 train samples"),
    (("--holdout", "0"), "--holdout must be a positive sample count or a fraction in (0, 1), not 0"),
    (("--holdout", "-2"), "--holdout must be a positive sample count or a fraction in (0, 1), not -2"),
    (("--holdout", "1.0"), "--holdout 1.0: a fraction must lie in (0, 1)"),
    (("--holdout", "0.0001"), "--holdout 0.0001 holds out 0 of the 1437 train samples"),
    (("--holdout", "ten"), "--holdout must be a sample count or a fraction in (0, 1), not 'ten'"),
    (("--holdout", "10", "--holdout-from", "trainval"), "digits has no split 'trainval' to hold out from"),
    (("--holdout", "10", "--holdout-seed", "-1"), "--holdout-seed must be non-negative"),
])
def test_bad_holdout_is_one_line_exit_2_and_writes_nothing(
    args: tuple[str, ...], message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"
    assert cli.main(["shards", "digits", "--out", str(out), *args]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("pipeline shards: error: ") and message in err[0], err
    assert not out.exists()


def test_a_train_split_that_may_hold_the_held_out_samples_is_refused(tmp_path: Path) -> None:
    write_shards(TinySource({"train": 20, "trainval": 30, "test": 10}), tmp_path, shard_size=10,
                 holdout=Holdout(6, source="trainval"))
    kwargs = {"resolution": 8, "crop_pct": 1, "batch_size": 2, "num_workers": 0, "val_split": "minival"}
    with pytest.raises(PipelineError, match=r"data\.val_split 'minival' .* held out of 'trainval'.* on 'trainval'"):
        ShardDataModule(str(tmp_path), train_split="train", **kwargs)
    assert ShardDataModule(str(tmp_path), train_split="trainval", **kwargs).splits["val"] == "minival"


def test_no_minival_key_in_a_full_train_epoch_of_any_rank_or_worker(held: Path) -> None:
    """Must show (issue 17): the keys of a full train epoch, 2 ranks × 2 workers through the data module's own
    loaders, are exactly the train split's and none is a minival key; the minival loader reads exactly minival."""
    dm = ShardDataModule(str(held), resolution=8, crop_pct=1, batch_size=20, num_workers=2, shuffle_buffer=200,
                         val_split="minival")
    minival, train = set(read_split(held, "minival")), set(read_split(held, "train"))
    loaders = [dm.loader("train", keys=True, world=(rank, 2)) for rank in range(2)]
    epochs = []
    for _ in range(2):  # every epoch, not only the first
        keys = [k for loader in loaders for batch in loader for k in batch[3]]
        assert len(keys) == len(set(keys)) == 1240  # 31 batches of 20 per rank: no cut at this size
        assert set(keys) == train and not set(keys) & minival
        epochs.append(keys)
    assert epochs[0] != epochs[1]  # a second epoch in a new order
    held_out = [k for rank in range(2) for batch in dm.loader("val", keys=True, world=(rank, 2)) for k in batch[3]]
    assert sorted(held_out) == sorted(minival)
