"""The one shard-writer loop: seeded shuffle, parallel encode/resize, resume, progress, throughput, manifest.

Every source (:mod:`pipeline.data.sources`) only lists records; this module turns them into
``<out>/<split>-NNNNNN.tar`` shards plus ``<out>/manifest.json`` (and timm's ``<out>/_info.json``):

- **shuffle**: each split's records are permuted with a generator seeded by ``(seed, split)``, so a shard
  holds a random mix of classes and the result is reproducible (fixed tar mtimes: same input and seed ⇒
  byte-identical shards ⇒ same content hash);
- **parallel**: images are read, verified (fully decoded), optionally downscaled and re-encoded in a
  ``multiprocessing`` pool of ``workers`` processes; results come back in order, so parallelism does not
  change the output;
- **resume**: a shard is written to a temporary name, fsynced and renamed (``pipeline.atomic.atomic_write``),
  then its record ``.parts/<shard>.json`` (count, hash, left-out keys) is written; a shard with both is
  complete and skipped on re-run. ``.parts/plan.json`` pins the arguments that decide shard contents, so a
  re-run with different ones is refused instead of mixing two layouts;
- **bad source images** (do not decode) are logged, left out, and counted in the manifest;
- **held-out data** (``holdout``, :mod:`pipeline.data.holdout`): a seeded part of a training split is written as
  the split ``minival`` instead, recorded in the manifest's ``holdout`` entry.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import multiprocessing
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import IO, Any

import numpy as np
from PIL import Image
from tqdm import tqdm
from webdataset.writer import TarWriter

from pipeline.atomic import atomic_write, atomic_write_json
from pipeline.data.holdout import HOLDOUT_SPLIT, Holdout, split_off
from pipeline.data.shard_manifest import MANIFEST, Manifest, Shard, Split, manifest_dict, parse_manifest
from pipeline.data.sources import Record, Source
from pipeline.errors import PipelineError

log = logging.getLogger(__name__)

PARTS = ".parts"
TIMM_INFO = "_info.json"  # read by timm's webdataset reader
# fixed so equal inputs give byte-identical shards; an int, as a float mtime costs a pax header per member
# (35 % slower to read back)
TAR_MTIME = 0
# for re-encoded JPEGs (downscaled, CMYK or mislabelled PNG sources): FFCV's default; 95 decodes ~20 % slower
# (320-side images: 301 vs 249 µs) for detail a downscaled ImageNet photo (itself ~90) does not have
JPEG_QUALITY = 90
_OLD_JPEG_QUALITY = 95  # what writes planned before --jpeg-quality existed used
_PIL_FORMAT = {"jpg": "JPEG", "png": "PNG"}


@dataclass(frozen=True)
class Encoded:
    """A record ready to store: the bytes under ``ext`` plus its labels."""

    key: str
    ext: str
    data: bytes
    label: int
    extra: dict[str, int]


@dataclass(frozen=True)
class Failed:
    """A record whose image could not be read or decoded."""

    key: str
    reason: str


def encode_record(record: Record, max_side: int | None = None, jpeg_quality: int = JPEG_QUALITY) -> Encoded | Failed:
    """Read, fully decode (to catch corrupt files) and, when needed, downscale/re-encode one record's image.

    Bytes are kept as they are unless the image is larger than ``max_side`` (downscaled keeping the aspect
    ratio) or its real format or mode cannot be stored under its extension (e.g. ImageNet's CMYK JPEGs and
    its PNG named ``.JPEG``): then it is re-encoded, as RGB for JPEG (at ``jpeg_quality``).
    """
    try:
        if isinstance(record.image, np.ndarray):
            data, img = None, Image.fromarray(record.image)
        else:
            data = record.image if isinstance(record.image, bytes) else Path(record.image).read_bytes()
            img = Image.open(io.BytesIO(data))
            if max_side and record.ext == "jpg" and max(img.size) > max_side:
                img.draft("RGB", (max_side, max_side))  # DCT-domain downscale: decodes far less
            img.load()
        fmt = _PIL_FORMAT[record.ext]
        storable = img.format == fmt and (fmt == "PNG" or img.mode in ("RGB", "L"))
        if max_side and max(img.size) > max_side:
            img.thumbnail((max_side, max_side), Image.Resampling.BICUBIC)
            storable = False
        if data is None or not storable:
            if fmt == "JPEG" and img.mode not in ("RGB", "L"):
                img = img.convert("RGB")
            buf = io.BytesIO()
            img.save(buf, format=fmt, **({"quality": jpeg_quality} if fmt == "JPEG" else {}))
            data = buf.getvalue()
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as err:
        # PIL reports corrupt or truncated files as OSError/UnidentifiedImageError, some bad PNGs as SyntaxError
        return Failed(record.key, f"{type(err).__name__}: {err}")
    return Encoded(record.key, record.ext, data, record.label, record.extra)


class _HashingWriter:
    """A write-only file wrapper that hashes what passes through (so a shard is not read back to hash it)."""

    def __init__(self, f: IO[bytes]) -> None:
        self.f, self.sha256, self.size = f, hashlib.sha256(), 0

    def write(self, b: bytes) -> int:
        self.sha256.update(b)
        self.size += len(b)
        return self.f.write(b)

    def flush(self) -> None:
        self.f.flush()


def _write_tar(path: Path, samples: list[Encoded]) -> str:
    """Write ``samples`` to the tar ``path`` atomically; return the file's SHA-256."""
    digest: list[str] = []

    def write(f: IO[bytes]) -> None:
        hashing = _HashingWriter(f)
        with TarWriter(hashing, mtime=TAR_MTIME, encoder=False) as tar:
            for s in samples:
                tar.write({"__key__": s.key, s.ext: s.data, "cls": str(s.label).encode(),
                           **{k: str(v).encode() for k, v in s.extra.items()}})
        digest.append(hashing.sha256.hexdigest())

    atomic_write(path, write)
    return digest[0]


def timm_info(dataset: str, splits: dict[str, Split]) -> dict[str, Any]:
    """timm's ``_info.json`` (``timm/data/readers/reader_wds.py``): per split its shards and their lengths.

    With it, timm's own reader (``create_dataset("wds/<name>", root=<out>, split="train")``, ``train.py
    --dataset wds/<name> --data-dir <out>``) reads these shards.
    """
    return {"name": dataset, "splits": {
        name: {"name": name, "num_samples": split.count, "filenames": [s.name for s in split.shards],
               "shard_lengths": [s.count for s in split.shards]}
        for name, split in splits.items()
    }}


def shard_name(split: str, index: int) -> str:
    """``<split>-NNNNNN.tar``."""
    return f"{split}-{index:06d}.tar"


def _shuffled(records: list[Record], seed: int, split: str) -> list[Record]:
    rng = np.random.default_rng([seed, int.from_bytes(hashlib.sha256(split.encode()).digest()[:4], "little")])
    return [records[i] for i in rng.permutation(len(records))]


def _check_keys(records: list[Record], split: str) -> None:
    seen: set[str] = set()
    for r in records:
        # webdataset splits "<key>.<ext>" at the first dot of the base name, so a key must not contain one
        if "." in r.key.rsplit("/", 1)[-1] or r.key in seen:
            raise PipelineError(f"{split}: sample key {r.key!r} contains a dot or is duplicated; the source is broken")
        seen.add(r.key)


def _check_plan(out: Path, plan: dict[str, Any]) -> None:
    path = out / PARTS / "plan.json"
    if path.exists():
        old = json.loads(path.read_text())
        old.setdefault("jpeg_quality", _OLD_JPEG_QUALITY)
        if old != plan:
            changed = sorted(k for k in set(old) | set(plan) if old.get(k) != plan.get(k))
            raise PipelineError(
                f"{out} holds shards written with different {', '.join(changed)}; "
                "re-run with the same arguments to resume, or write to a new --out"
            )
    else:
        atomic_write_json(path, plan)


def _complete(out: Path, name: str) -> dict[str, Any] | None:
    part = out / PARTS / f"{name}.json"
    if (out / name).exists() and part.exists():
        return json.loads(part.read_text())
    return None


def _encoded_stream(records: Iterable[Record], encode: Callable[[Record], Encoded | Failed], pool: Any
                    ) -> Iterator[Encoded | Failed]:
    return pool.imap(encode, records, chunksize=8) if pool is not None else map(encode, records)


def write_split(
    dataset: str, split: str, records: list[Record], out: Path, *, shard_size: int,
    encode: Callable[[Record], Encoded | Failed], seed: int, pool: Any,
) -> Split:
    """Write one split's shards (skipping complete ones; records turned into samples by ``encode``) and return
    its manifest entry."""
    records = _shuffled(records, seed, split)
    groups = [records[i : i + shard_size] for i in range(0, len(records), shard_size)]
    names = [shard_name(split, i) for i in range(len(groups))]
    done = {n: part for n in names if (part := _complete(out, n)) is not None}
    todo = [(n, g) for n, g in zip(names, groups, strict=True) if n not in done]
    pending = sum(len(g) for _, g in todo)
    if done:
        log.info("%s: %d of %d shards already complete, resuming", split, len(done), len(names))

    start = time.perf_counter()
    stream = _encoded_stream((r for _, g in todo for r in g), encode, pool)
    with tqdm(total=pending, desc=f"{dataset}/{split}", unit="img", mininterval=1.0, disable=not pending) as bar:
        for name, group in todo:
            samples: list[Encoded] = []
            skipped: list[str] = []
            for result in (next(stream) for _ in group):
                if isinstance(result, Failed):
                    log.warning("%s: left out %s: it does not decode (%s)", split, result.key, result.reason)
                    skipped.append(result.key)
                else:
                    samples.append(result)
                bar.update()
            sha = _write_tar(out / name, samples)
            done[name] = {"count": len(samples), "sha256": sha, "skipped": skipped}
            atomic_write_json(out / PARTS / f"{name}.json", done[name])
    elapsed = time.perf_counter() - start
    if pending:
        log.info(
            "%s: wrote %d images into %d shards in %.1f s (%.0f images/s)",
            split, pending, len(todo), elapsed, pending / max(elapsed, 1e-9),
        )
    shards = tuple(Shard(n, done[n]["count"], done[n]["sha256"]) for n in names)
    skipped_keys = tuple(k for n in names for k in done[n]["skipped"])
    return Split(split, shards, skipped_keys)


def _hold_out(source: Source, records: dict[str, list[Record]], holdout: Holdout) -> dict[str, Any]:
    """Move ``holdout``'s part of its split into ``records[HOLDOUT_SPLIT]`` (in place); the manifest's entry."""
    if holdout.seed < 0:
        raise PipelineError(f"--holdout-seed must be non-negative, not {holdout.seed}")
    if holdout.source not in records:
        raise PipelineError(f"{source.name} has no split {holdout.source!r} to hold out from "
                            f"(it has {', '.join(records)}); set --holdout-from to one of those")
    if HOLDOUT_SPLIT in records:
        raise PipelineError(f"{source.name} already has a split {HOLDOUT_SPLIT!r}; drop --holdout")
    available = len(records[holdout.source])
    records[holdout.source], records[HOLDOUT_SPLIT] = split_off(records[holdout.source], holdout)
    return holdout.record(len(records[HOLDOUT_SPLIT]), available)


def write_shards(
    source: Source,
    out: str | Path,
    *,
    shard_size: int | None = None,
    max_side: int | None = None,
    jpeg_quality: int = JPEG_QUALITY,
    workers: int = 1,
    seed: int = 0,
    holdout: Holdout | None = None,
) -> Manifest:
    """Write every split of ``source`` to ``out`` and the manifest last; return the parsed manifest.

    ``shard_size`` defaults to the source's ``default_shard_size``; ``workers`` > 1 encodes in that many
    processes. Images larger than ``max_side`` are downscaled and re-encoded at ``jpeg_quality``. ``holdout``
    moves a seeded part of one split into the split ``minival``. Re-running with the same arguments skips
    complete shards. Every refusal comes before anything is written.
    """
    out = Path(out)
    shard_size = source.default_shard_size if shard_size is None else shard_size
    if shard_size < 1 or workers < 1 or (max_side is not None and max_side < 1) or seed < 0:
        raise PipelineError("--shard-size, --workers and --max-side must be positive and --seed non-negative")
    if not 1 <= jpeg_quality <= 100:
        raise PipelineError(
            f"--jpeg-quality must be 1…100 (PIL's scale; {JPEG_QUALITY} by default), not {jpeg_quality}")
    start = time.perf_counter()
    records = {split: list(source.records(split)) for split in source.split_names}  # a bad --src fails here
    for split, recs in records.items():
        if not recs:
            raise PipelineError(f"{source.name}: split {split!r} has no samples under {source.src}; check --src")
        _check_keys(recs, split)
    plan = {"dataset": source.name, "source": source.describe(), "shard_size": shard_size,
            "max_side": max_side, "jpeg_quality": jpeg_quality, "seed": seed}
    held: dict[str, Any] | None = None
    if holdout is not None:
        held = _hold_out(source, records, holdout)
        # only then in the plan: shards planned before --holdout existed resume as they were
        plan["holdout"] = {"size": holdout.size, "seed": holdout.seed, "from": holdout.source}
    out.mkdir(parents=True, exist_ok=True)
    _check_plan(out, plan)
    for stale in out.glob(".*.tmp"):  # half-written shards of an interrupted run (atomic_write's temp files)
        stale.unlink()

    pool = multiprocessing.Pool(workers) if workers > 1 else None
    try:
        splits = {
            split: write_split(source.name, split, recs, out, shard_size=shard_size, seed=seed, pool=pool,
                               encode=partial(encode_record, max_side=max_side, jpeg_quality=jpeg_quality))
            for split, recs in records.items()
        }
    finally:
        if pool is not None:
            pool.terminate()
    obj = manifest_dict(
        dataset=source.name,
        classes=source.classes,
        splits=splits,
        source=source.describe(),
        writer={**plan, "workers": workers},
        extra=source.extra(),
        holdout=held,
    )
    atomic_write_json(out / TIMM_INFO, timm_info(source.name, splits))
    atomic_write_json(out / MANIFEST, obj)
    log.info(
        "%s: %d shards under %s (%s), %d source images left out; %.1f s in all",
        source.name, sum(len(s.shards) for s in splits.values()), out,
        ", ".join(f"{n} {s.count}" for n, s in splits.items()), obj["skipped"], time.perf_counter() - start,
    )
    return parse_manifest(str(out), obj, str(out / MANIFEST))
