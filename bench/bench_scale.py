"""Does the pipeline hold at ImageNet scale? Every figure at the chosen size beside the same at 1/10 of it.

``python -m bench scale`` (``make bench-scale``; ``python -m bench.bench_scale --scale 0.1`` for 1/10 of
ImageNet) writes an ILSVRC2012-format tree of small JPEGs (1,281,167 train images in 1,000 ``n0xxxxxxx``
class folders, 50,000 flat val images with the devkit's ``meta.mat`` and ground truth) and measures, at that
size and at 1/10 of it:

- ``pipeline shards imagenet`` (the real command, a subprocess): wall time and peak RSS;
- the every-rank pre-launch checks of ``pipeline fit`` at world 64 (``training.checks.check_batches``);
- time to the first batch for a few ranks (``num_workers`` 8, real decode and augmentation);
- one train epoch, one minival pass (selection: 10,000 held out of train) and one val pass (reported) over all
  64 × 8 slots with exact coverage: the real loader, stream, plans and shard reading, every key counted, only the
  image decode swapped for reading the label (decoding 1.28 M images is hours on a small machine and is not what
  coverage depends on);
- the first batch after a mid-epoch resume at half the epoch (``ShardLoader.load_state_dict``);
- ``pipeline sweep scale --dry-run`` of a 28-run ImageNet study on the generated shards;
- ``pipeline report`` over 100 synthetic result records (10 at 1/10).

The table gives the ratio of each figure to its 1/10 one: about 10 for what grows with the data, about 1 for
what should not. Inputs live under ``--work`` (default ``/tmp/bench-scale``), are kept and resumed.
"""

from __future__ import annotations

import argparse
import io
import math
import os
import platform
import random
import statistics
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml
from PIL import Image

from pipeline.data.datamodule import ShardDataModule
from pipeline.data.sources.imagenet import DEVKIT, GROUND_TRUTH, META
from pipeline.training.checks import check_batches

REPO = Path(__file__).resolve().parents[1]
DATA_CONFIG = REPO / "configs" / "data" / "imagenet.yaml"
# what `pipeline fit` would combine for an ImageNet compound study (merged into one file: sweep takes one config)
STUDY_CONFIGS = ("data/imagenet.yaml", "model/compound.yaml", "recipe/efficientnet.yaml", "trainer/gpu.yaml")
DISTINCT_JPEGS = 256


@dataclass(frozen=True)
class Settings:
    """Sizes (the chosen size; the 1/10 one is :meth:`tenth`), the world, and the sweep and report sizes."""

    train: int = 1_281_167
    val: int = 50_000
    holdout: int = 10_000  # minival carved from train (pipeline shards --holdout): the ImageNet config selects on it
    classes: int = 1000
    shard_size: int = 1000
    writer_workers: int = 1
    world: int = 64
    workers: int = 8
    batch: int = 128
    resolution: int = 224
    first_batch_ranks: int = 3
    sweep: tuple[str, ...] = ("--phi", "0..7", "--strategy", "d", "w", "r", "dwr", "dWr", "--scale", "2,4,8,16")
    reports: int = 100
    data: dict[str, Any] = field(default_factory=dict)  # overrides of configs/data/imagenet.yaml's data keys

    def tenth(self) -> Settings:
        """The same measurement at 1/10 of the data (and of the report's records)."""
        return replace(self, train=self.train // 10, val=self.val // 10, holdout=max(1, self.holdout // 10),
                       classes=min(self.classes, self.train // 10), reports=max(1, self.reports // 10))


# the suite's setting: 8 ranks × 2 workers, a 2-run sweep; still the real commands, loaders and checks
TINY = Settings(train=1200, val=160, holdout=80, classes=4, shard_size=20, world=8, workers=2, batch=8, resolution=32,
                first_batch_ranks=2, sweep=("--phi", "0..1"), reports=20,
                data={"shuffle_buffer": 50, "auto_augment": None})


@dataclass
class Coverage:
    """One pass over every (rank, worker) slot: keys read, how often, and batches per rank."""

    samples: int  # samples in the split (manifest)
    cut: int  # samples the plan leaves out by design: N mod (world · batch) in training, none in evaluation
    read: int  # keys yielded, duplicates included
    distinct: int
    batches: list[int]
    seconds: float

    @property
    def duplicates(self) -> int:
        """Keys read more than once (extra reads)."""
        return self.read - self.distinct

    @property
    def missing(self) -> int:
        """Samples of the split never read."""
        return self.samples - self.distinct


@dataclass
class Figures:
    """Everything measured at one size."""

    settings: Settings
    tree_s: float
    writer_s: float
    writer_rss_mib: float
    shards: int
    checks_s: float
    first_batch_s: list[float]
    train: Coverage
    minival: Coverage  # the selection split (data.val_split), every epoch
    val: Coverage  # the reported split (data.test_split): ImageNet's official val
    resume_s: float
    resume_fresh_s: float
    resume_at: tuple[int, int]
    sweep_s: float
    report_s: float
    row_limits: dict[str, str] = field(default_factory=dict)


def distinct_jpegs(n: int, seed: int = 0) -> list[bytes]:
    """``n`` distinct small JPEGs (crops of scikit-learn's two photos, 64–128 px a side, quality 90)."""
    from sklearn.datasets import load_sample_images

    photos = [Image.fromarray(p) for p in load_sample_images().images]
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        photo = photos[i % len(photos)]
        w, h = int(rng.integers(64, 129)), int(rng.integers(64, 129))
        x, y = int(rng.integers(0, photo.width - 2 * w)), int(rng.integers(0, photo.height - 2 * h))
        buf = io.BytesIO()
        photo.resize((w, h), Image.Resampling.BILINEAR, box=(x, y, x + 2 * w, y + 2 * h)).save(buf, "JPEG", quality=90)
        out.append(buf.getvalue())
    return out


def wnid(c: int) -> str:
    """The class folder name of class ``c`` (ILSVRC's ``n`` + 8 digits)."""
    return f"n{1_440_764 + 997 * c:08d}"


def write_devkit(root: Path, wnids: list[str], val_wnids: list[str], seed: int) -> None:
    """``ILSVRC2012_devkit_t12/data/{meta.mat, ILSVRC2012_validation_ground_truth.txt}``, IDs not in wnid order."""
    from scipy.io import savemat

    ids = list(range(1, len(wnids) + 1))
    random.Random(seed).shuffle(ids)  # as in the real devkit, ILSVRC2012_ID order is not sorted-wnid order
    id_of = dict(zip(wnids, ids, strict=True))
    data = root / DEVKIT / "data"
    data.mkdir(parents=True, exist_ok=True)
    (data / Path(GROUND_TRUTH).name).write_text("".join(f"{id_of[w]}\n" for w in val_wnids))
    dtype = [("ILSVRC2012_ID", "O"), ("WNID", "O"), ("words", "O"), ("gloss", "O"), ("num_children", "O"),
             ("children", "O"), ("wordnet_height", "O"), ("num_train_images", "O")]
    rows = [(id_of[w], w, f"class {w}", "generated", 0, np.zeros(0), 0, 0) for w in wnids]
    savemat(data / Path(META).name, {"synsets": np.array(rows, dtype=dtype)})


def make_tree(root: Path, s: Settings, seed: int = 0) -> Path:
    """The ILSVRC2012 layout under ``root`` (kept when already complete with these sizes); return ``root``.

    Train images go round-robin over the classes; val is flat with the devkit. File contents cycle through
    :data:`DISTINCT_JPEGS` distinct JPEGs, so writing the files, not encoding them, is the cost.
    """
    done = root / ".complete"
    stamp = f"{s.train} {s.val} {s.classes} {seed}"
    if done.exists() and done.read_text() == stamp:
        return root
    jpegs = distinct_jpegs(DISTINCT_JPEGS, seed)
    wnids = [wnid(c) for c in range(s.classes)]
    for w in wnids:
        (root / "train" / w).mkdir(parents=True, exist_ok=True)
    for i in range(s.train):
        w = wnids[i % s.classes]
        (root / "train" / w / f"{w}_{i}.JPEG").write_bytes(jpegs[i % DISTINCT_JPEGS])
    (root / "val").mkdir(parents=True, exist_ok=True)
    for i in range(s.val):
        (root / "val" / f"ILSVRC2012_val_{i + 1:08d}.JPEG").write_bytes(jpegs[(7 * i) % DISTINCT_JPEGS])
    write_devkit(root, wnids, [wnids[(3 * i) % s.classes] for i in range(s.val)], seed)
    done.write_text(stamp)
    return root


def write_shards(tree: Path, out: Path, s: Settings, log: Path) -> tuple[float, float]:
    """``pipeline shards imagenet`` as a subprocess: ``(wall seconds, peak RSS MiB)``.

    The peak is ``wait4``'s of that process, whose own reaped children (the encoding pool) it includes.
    """
    cmd = [sys.executable, "-m", "pipeline.cli", "shards", "imagenet", "--src", str(tree), "--out", str(out),
           "--shard-size", str(s.shard_size), "--workers", str(s.writer_workers), "--holdout", str(s.holdout)]
    start = time.perf_counter()
    with log.open("w") as f:
        proc = subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT, cwd=REPO)
        _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    seconds = time.perf_counter() - start
    if proc.returncode:
        raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}): {log.read_text()[-2000:]}")
    return seconds, usage.ru_maxrss / 1024


def data_module(shards: Path, s: Settings) -> ShardDataModule:
    """The ImageNet config's data module (``configs/data/imagenet.yaml`` + ``s.data``) at world ``s.world``."""
    data = yaml.safe_load(DATA_CONFIG.read_text())["data"]
    data = {**data, **s.data, "root": str(shards), "num_workers": s.workers, "batch_size": s.batch}
    return ShardDataModule(resolution=s.resolution, **data)


def label_only(sample: dict) -> tuple[torch.Tensor, int]:
    """The coverage pass's decode: the label, no image (what is read, not how it is decoded, is measured)."""
    return torch.zeros((), dtype=torch.uint8), int(sample["cls"])


def coverage(dm: ShardDataModule, role: str, world: int) -> Coverage:
    """Every rank's ``role`` loader (real workers, stream, plans, shard reading), each key counted."""
    seen: Counter[str] = Counter()
    batches = []
    start = time.perf_counter()
    for rank in range(world):
        loader = dm.loader(role, keys=True, world=(rank, world))
        loader.dataset.decode = label_only  # set before iter(): the forked workers inherit it
        n = 0
        for batch in loader:
            seen.update(batch[3])
            n += 1
        batches.append(n)
    count = dm.manifest.split(dm.splits[role]).count
    cut = count % (world * dm.batch_size) if role == "train" else 0
    return Coverage(count, cut, sum(seen.values()), len(seen), batches, time.perf_counter() - start)


def first_batch(dm: ShardDataModule, rank: int, world: int, state: dict[str, int] | None = None) -> float:
    """Seconds from ``iter()`` of a rank's train loader (after ``load_state_dict(state)``) to its first batch."""
    loader = dm.loader("train", world=(rank, world))
    if state:
        loader.load_state_dict(state)
    start = time.perf_counter()
    batches = iter(loader)
    next(batches)
    seconds = time.perf_counter() - start
    batches.close()  # drops the DataLoader iterator: its workers exit now
    return seconds


def study_config(shards: Path, work: Path) -> Path:
    """An ImageNet experiment config (the four ``configs/*`` files a user combines) on ``shards``."""
    merged: dict[str, Any] = {}
    for name in STUDY_CONFIGS:
        for key, value in yaml.safe_load((REPO / "configs" / name).read_text()).items():
            merged[key] = {**merged.get(key, {}), **value} if isinstance(value, dict) else value
    merged["data"]["root"] = str(shards)
    merged["run"] = {"root": str(work / "runs")}
    path = work / "imagenet-study.yaml"
    path.write_text(yaml.safe_dump(merged))
    return path


def timed_command(args: list[str], log: Path) -> float:
    """Run ``python -m pipeline.cli <args>``; its wall seconds (RuntimeError with its log if it fails)."""
    start = time.perf_counter()
    with log.open("w") as f:
        code = subprocess.run([sys.executable, "-m", "pipeline.cli", *args], stdout=f, stderr=subprocess.STDOUT,
                              cwd=REPO, env={**os.environ, "WANDB_MODE": "disabled"}).returncode
    if code:
        raise RuntimeError(f"pipeline {' '.join(args)} failed ({code}): {log.read_text()[-2000:]}")
    return time.perf_counter() - start


def write_records(sweep: Path, n: int, val_images: int) -> Path:
    """A scale sweep directory with ``n`` finished runs (``result.json`` each) and its ``sweep.json``."""
    from pipeline.atomic import atomic_write_json
    from pipeline.training.result import RESULT_KEYS, write_result

    strategies = ("compound", "d", "w", "r", "dwr", "dWr")
    runs = []
    for i in range(n):
        strategy, k = strategies[i % len(strategies)], i // len(strategies)
        run_dir = sweep / f"{strategy}-{k}"
        write_result(run_dir, {**dict.fromkeys(RESULT_KEYS), "run_name": run_dir.name, "sweep": sweep.name,
                               "strategy": strategy, "phi": float(k) if strategy == "compound" else None,
                               "s": None if strategy == "compound" else 2.0 ** k, "fast_alpha": 0.8,
                               "alpha": 1.2, "beta": 1.1, "gamma": 1.15, "d": 1.2 ** k, "w": 1.1 ** k,
                               "r": 1.15 ** k, "resolution": 224 + 32 * k, "params": 5_300_000 * 2 ** k,
                               "flops": 390_000_000 * 2 ** k, "acts": 6_700_000 * 1.5 ** k,
                               "top1": 0.70 + 0.01 * k + 0.001 * (i % 7), "epoch_time_s": 600.0 * 2 ** k,
                               "dataset": "imagenet"})
        runs.append({"run_dir": str(run_dir)})
    atomic_write_json(sweep / "sweep.json", {"kind": "scale", "name": sweep.name, "val_images": val_images,
                                             "runs": runs})
    return sweep


def measure(s: Settings, work: Path) -> Figures:
    """Every figure at the sizes of ``s``, inputs under ``work/<train>``."""
    work = work / f"n{s.train}-v{s.val}-c{s.classes}"
    work.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    tree = make_tree(work / "tree", s)
    tree_s = time.perf_counter() - start
    shards = work / f"shards-{s.shard_size}"
    if shards.exists():  # a kept tree is reused; the writer is measured from scratch every time
        subprocess.run(["rm", "-rf", str(shards)], check=True)
    writer_s, rss = write_shards(tree, shards, s, work / "shards.log")
    dm = data_module(shards, s)
    start = time.perf_counter()
    check_batches(dm, s.world, "fit")
    checks_s = time.perf_counter() - start
    firsts = [first_batch(dm, rank, s.world) for rank in _ranks(s)]
    train, minival, val = (coverage(dm, role, s.world) for role in ("train", "val", "test"))
    half = train.batches[0] // 2
    resume = first_batch(dm, 0, s.world, {"epoch": 0, "batches": half})
    fresh = first_batch(dm, 0, s.world, {"epoch": 0, "batches": 0})
    sweep_s = timed_command(["sweep", "scale", "--config", str(study_config(shards, work)), "--name", "bench",
                             "--dry-run", *s.sweep, "--", "--data.root", str(shards)], work / "sweep.log")
    reports = work / f"report-{s.reports}"
    subprocess.run(["rm", "-rf", str(reports)], check=True)
    write_records(reports, s.reports, s.val)
    report_s = timed_command(["report", str(reports), "--no-wandb"], work / "report.log")
    return Figures(s, tree_s, writer_s, rss, len(list(shards.glob("*.tar"))), checks_s, firsts, train, minival, val,
                   resume,
                   fresh, (half, train.batches[0]), sweep_s, report_s)


def rows(big: Figures, small: Figures) -> list[tuple[str, str, str, float, str]]:
    """``(figure, at the size, at 1/10, ratio, what limits it)`` for the table."""
    s = big.settings

    def row(name: str, a: float, b: float, fmt: str, limits: str) -> tuple[str, str, str, float, str]:
        return name, format(a, fmt), format(b, fmt), a / b if b else math.nan, limits

    def spread(xs: list[float]) -> str:
        return f"{min(xs):.2f} / {statistics.median(xs):.2f} / {max(xs):.2f}"

    out = [
        row("train + minival / val images", big.train.samples + big.minival.samples + big.val.samples,
            small.train.samples + small.minival.samples + small.val.samples, ",",
            f"the setting; minival = {s.holdout:,} of train (--holdout)"),
        row("JPEG tree written (s; kept between runs: 0 when reused)", big.tree_s, small.tree_s, ".1f",
            "file creation"),
        row("`pipeline shards imagenet`: shards written", big.shards, small.shards, ",", f"{s.shard_size} per shard"),
        row(f"`pipeline shards imagenet`: wall s ({s.writer_workers} worker)", big.writer_s, small.writer_s, ".1f",
            "reading + tar writing, one process per worker"),
        row("`pipeline shards imagenet`: peak RSS MiB", big.writer_rss_mib, small.writer_rss_mib, ".0f",
            "interpreter + torch imports; records of the split"),
        row(f"pre-launch checks, {s.world} ranks' train + val loaders (s)", big.checks_s, small.checks_s, ".2f",
            "one transform + plan per rank"),
    ]
    out.append((f"first train batch, ranks {', '.join(map(str, _ranks(s)))}: min / median / max s "
                f"({s.workers} workers, real decode)", spread(big.first_batch_s), spread(small.first_batch_s),
                statistics.median(big.first_batch_s) / statistics.median(small.first_batch_s),
                "every worker decodes its first batch at once on this machine's cores (where a rank has fewer "
                "batches than workers, fewer do); the raw-sample buffer fill is bounded by data.shuffle_buffer"))
    for role, a, b, limits in (
        ("train epoch", big.train, small.train, (
            "cut = N mod (world × batch), < one global batch (read ratio = batches ratio)",
            "equal on every rank by design", f"{s.world} × {s.workers} worker starts + reading each slot's ranges")),
        ("minival pass (selection)", big.minival, small.minival, (
            "every sample once: cut 0", "may differ by rank by design",
            f"{s.world} × {s.workers} worker starts; few shards: each slot reads whole shards, keeps every k-th")),
        ("val pass (reported)", big.val, small.val, (
            "every sample once: cut 0", "may differ by rank by design",
            f"{s.world} × {s.workers} worker starts; with fewer shards than slots every slot reads a whole shard to "
            "keep every k-th sample: slots × shard size raw reads, whatever N")),
    ):
        out.append((f"{role}, {s.world} × {s.workers} slots: read / distinct / duplicates / missing (cut)",
                    f"{a.read:,} / {a.distinct:,} / {a.duplicates} / {a.missing} ({a.cut})",
                    f"{b.read:,} / {b.distinct:,} / {b.duplicates} / {b.missing} ({b.cut})", a.read / b.read,
                    limits[0]))
        out.append((f"{role}: batches per rank (min–max)", f"{min(a.batches)}–{max(a.batches)}",
                    f"{min(b.batches)}–{max(b.batches)}", max(a.batches) / max(b.batches), limits[1]))
        out.append(row(f"{role}: wall s (labels only, no image decode)", a.seconds, b.seconds, ".1f", limits[2]))
    out += [
        row("first batch after resume at half the epoch, rank 0 (s)", big.resume_s, small.resume_s, ".2f",
            f"skips {big.resume_at[0]} of {big.resume_at[1]} batches' raw samples (tar reading, no decode)"),
        row("first batch from the epoch's start, rank 0 (s)", big.resume_fresh_s, small.resume_fresh_s, ".2f",
            "the same loader without the skip, for comparison"),
        row(f"`pipeline sweep scale --dry-run` {' '.join(s.sweep)} (s)", big.sweep_s, small.sweep_s, ".1f",
            "building + measuring every net (flops matching); the data adds one manifest read"),
        row(f"`pipeline report` over {s.reports} / {small.settings.reports} records (s)", big.report_s,
            small.report_s, ".1f", "imports + matplotlib figures"),
    ]
    return out


def _ranks(s: Settings) -> list[int]:
    """The ranks whose first batch is timed: ``first_batch_ranks`` of them, evenly spread from 0 to world − 1."""
    return sorted({round(i * (s.world - 1) / max(s.first_batch_ranks - 1, 1)) for i in range(s.first_batch_ranks)})


def machine() -> str:
    """CPU model, cores, RAM and Python/torch versions, one line."""
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor() or "unknown CPU")
    mem = next(int(line.split()[1]) for line in Path("/proc/meminfo").read_text().splitlines()
               if line.startswith("MemTotal"))
    return (f"{cpu}, {os.cpu_count()} cores, {mem / 2**20:.0f} GiB RAM, Python {platform.python_version()}, "
            f"torch {torch.__version__}")


def table(big: Figures, small: Figures) -> str:
    """The markdown table and its notes."""
    lines = [f"| figure | {big.settings.train:,} train | {small.settings.train:,} train | ratio | limits |",
             "|---|---:|---:|---:|---|"]
    lines += [f"| {name} | {a} | {b} | {ratio:.2f}× | {limits} |" for name, a, b, ratio, limits in rows(big, small)]
    return "\n".join([*lines, "", f"machine: {machine()}",
                      f"ratio ≈ 10 grows with the data, ≈ 1 does not; batch {big.settings.batch}, "
                      f"{big.settings.resolution} px, world {big.settings.world} × {big.settings.workers} workers"])


def run(s: Settings, work: Path) -> tuple[Figures, Figures]:
    """Measure at ``s`` and at ``s.tenth()`` (the smaller first), print the table, return both."""
    torch.set_num_threads(1)
    small = measure(s.tenth(), work)
    big = measure(s, work)
    print(table(big, small), flush=True)
    return big, small


def main(argv: list[str] | None = None) -> None:
    """``python -m bench scale`` (full ImageNet size) or ``python -m bench.bench_scale --scale 0.1 --work DIR``."""
    p = argparse.ArgumentParser(prog="python -m bench.bench_scale", description=__doc__.split("\n\n")[0])
    p.add_argument("--scale", type=float, default=1.0, help="fraction of ImageNet's image counts (default 1)")
    p.add_argument("--work", type=Path, default=Path("/tmp/bench-scale"), help="inputs (default /tmp/bench-scale)")
    p.add_argument("--writer-workers", type=int, default=1, help="pipeline shards --workers (default 1)")
    args = p.parse_args([] if argv is None else argv)
    full = Settings()
    run(replace(full, train=round(full.train * args.scale), val=round(full.val * args.scale),
                writer_workers=args.writer_workers), args.work)


if __name__ == "__main__":
    main(sys.argv[1:])
