"""``pipeline shards``: write webdataset shards + manifest from a dataset's real on-disk format."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from pipeline.data.holdout import Holdout, parse_holdout
from pipeline.data.sharding import JPEG_QUALITY, write_shards
from pipeline.data.sources import DATASETS, get_source
from pipeline.errors import PipelineError

EPILOG = """\
expected --src layouts (nothing is downloaded):
  imagenet    ILSVRC2012: train/<wnid>/*.JPEG and val/ either as <wnid>/*.JPEG or flat
              ILSVRC2012_val_*.JPEG with ILSVRC2012_devkit_t12/ (data/meta.mat +
              data/ILSVRC2012_validation_ground_truth.txt) in --src or in val/
  cifar100    cifar-100-python/{train,test,meta} pickles (--src may be that folder or its parent)
  flowers102  jpg/image_XXXXX.jpg + imagelabels.mat + setid.mat
  digits      no --src: scikit-learn's embedded 1,797 digits (train 1437 / val 180 / test 180)

output: <out>/<split>-000000.tar … (samples __key__, jpg|png, cls) and <out>/manifest.json.
Re-running with the same arguments resumes: complete shards are kept.
--holdout N|F writes N (or the fraction F) of the training samples, drawn by --holdout-seed, as the split
minival instead of train: the split a run selects on (data.val_split: minival) when the reported split
(data.test_split) must stay unseen, as NAS papers hold out 10,000 or 25,000 ImageNet training images.
examples: pipeline shards digits --out data/digits
          pipeline shards imagenet --src /data/ILSVRC2012 --out data/imagenet --holdout 10000
"""


def parser() -> argparse.ArgumentParser:
    """The argument parser of ``pipeline shards``."""
    p = argparse.ArgumentParser(
        prog="pipeline shards",
        description="Write webdataset tar shards and a manifest (counts, classes, content hash) for one dataset.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("dataset", choices=DATASETS, help="which dataset format to read")
    p.add_argument("--src", type=Path, help="the dataset's root directory (not for digits)")
    p.add_argument("--out", type=Path, required=True, help="output directory for shards and manifest.json")
    p.add_argument("--shard-size", type=int, help="samples per shard (default: 1000; digits 200)")
    p.add_argument("--max-side", type=int, help="store images downscaled so the longer side is at most PX")
    p.add_argument("--jpeg-quality", type=int, default=JPEG_QUALITY, metavar="Q",
                   help=f"quality of re-encoded (downscaled) JPEGs, 1…100 (default {JPEG_QUALITY}, as FFCV)")
    p.add_argument("--workers", type=int, default=1, help="encoding processes (default 1)")
    p.add_argument("--seed", type=int, default=0, help="seed of the per-split shuffle before writing (default 0)")
    p.add_argument("--holdout", metavar="N|F",
                   help="write N training samples (or the fraction F in (0, 1)) as the split minival instead")
    p.add_argument("--holdout-seed", type=int, default=0, help="seed of the held-out draw (default 0)")
    p.add_argument("--holdout-from", default="train", metavar="SPLIT",
                   help="the split to hold out from (default train; flowers102's transfer set: trainval)")
    return p


def main(argv: list[str]) -> int:
    """Entry point: ``argv[0]`` is the command name."""
    args = parser().parse_args(argv[1:])
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args.dataset == "digits":
        if args.src is not None:
            raise PipelineError("digits ships inside scikit-learn: drop --src")
    elif args.src is None:
        raise PipelineError(f"{args.dataset} needs --src <the dataset's root directory> (see pipeline shards --help)")
    holdout = None if args.holdout is None else Holdout(parse_holdout(args.holdout), args.holdout_seed,
                                                         args.holdout_from)
    source = get_source(args.dataset, args.src)
    manifest = write_shards(
        source, args.out, shard_size=args.shard_size, max_side=args.max_side, jpeg_quality=args.jpeg_quality,
        workers=args.workers, seed=args.seed, holdout=holdout,
    )
    print(f"{args.out / 'manifest.json'}: {manifest.num_classes} classes, content hash {manifest.content_hash[:16]}")
    if manifest.holdout is not None:
        held = manifest.holdout
        print(f"held out {held['count']} of {held['from']} as {held['split']} (seed {held['seed']}); "
              f"{held['from']} keeps {held['from_count']}")
    return 0
