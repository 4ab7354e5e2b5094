"""The shard manifest: what a shard directory holds, read once so an epoch's length is known without scanning.

Layout of a shard root (a local directory or any URL prefix webdataset's ``gopen`` reads)::

    <root>/manifest.json
    <root>/<split>-000000.tar  <root>/<split>-000001.tar  …

A root containing ``{}`` is a template instead: ``pipe:aws s3 cp s3://bucket/imagenet/{} -`` reads
``manifest.json`` and every shard through that command (object stores work through their CLI).
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from webdataset.gopen import gopen

from pipeline.data.holdout import HOLDOUT_SPLIT
from pipeline.errors import PipelineError

MANIFEST = "manifest.json"
FORMAT_VERSION = 1


@dataclass(frozen=True)
class Shard:
    """One tar shard: file name inside the root, number of samples, SHA-256 of the file."""

    name: str
    count: int
    sha256: str


@dataclass(frozen=True)
class Split:
    """One split: its shards in order, and the keys of source images the writer left out (did not decode)."""

    name: str
    shards: tuple[Shard, ...]
    skipped_keys: tuple[str, ...] = ()

    @property
    def count(self) -> int:
        """Number of samples in the split."""
        return sum(s.count for s in self.shards)

    @property
    def skipped(self) -> int:
        """Number of source images left out of the split."""
        return len(self.skipped_keys)


@dataclass(frozen=True)
class Manifest:
    """The parsed ``manifest.json`` of one shard root (see the module docstring for the layout)."""

    root: str
    dataset: str
    classes: tuple[str, ...]
    splits: dict[str, Split]
    content_hash: str
    source: dict[str, Any] = field(default_factory=dict)
    writer: dict[str, Any] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)
    holdout: dict[str, Any] | None = None  # the held-out split written by --holdout: split, from, count, seed

    @property
    def num_classes(self) -> int:
        """Number of classes (the model's head size)."""
        return len(self.classes)

    @property
    def skipped(self) -> int:
        """Source images the writer could not decode and left out, over all splits."""
        return sum(s.skipped for s in self.splits.values())

    def split(self, name: str) -> Split:
        """The split called ``name``; a PipelineError naming the available ones if there is none."""
        if name not in self.splits:
            if name == HOLDOUT_SPLIT:
                raise PipelineError(
                    f"{self.root} has no split {name!r}: re-shard with `pipeline shards {self.dataset} … --holdout N` "
                    "(N training samples, or a fraction such as 0.1, held out for selection) into a new --out")
            raise PipelineError(
                f"{self.root} has no split {name!r} (it has {', '.join(sorted(self.splits))}); "
                "set data.train_split / val_split / test_split to one of those"
            )
        return self.splits[name]

    def urls(self, split: str) -> list[str]:
        """The shard URLs of ``split`` in manifest order."""
        return [shard_url(self.root, s.name) for s in self.split(split).shards]

    def missing_shards(self, split: str) -> list[str]:
        """Local shard files of ``split`` that do not exist (always empty for remote roots)."""
        if not is_local(self.root):
            return []
        return [u for u in self.urls(split) if not os.path.exists(u)]


def is_local(root: str) -> bool:
    """Whether ``root`` is a plain local path (not ``pipe:``, ``http://``, … and not a template)."""
    return "{}" not in root and (root.startswith("file:") or ":" not in root.split("/", 1)[0])


def shard_url(root: str, name: str) -> str:
    """The URL of file ``name`` under ``root`` (a directory, URL prefix or ``{}`` template)."""
    if "{}" in root:
        return root.replace("{}", name)
    root = root.removeprefix("file:")
    return f"{root.rstrip('/')}/{name}"


def manifest_dict(
    *,
    dataset: str,
    classes: list[str],
    splits: dict[str, Split],
    source: dict[str, Any],
    writer: dict[str, Any],
    extra: dict[str, Any] | None = None,
    holdout: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The JSON object written as ``manifest.json``; ``content_hash`` covers classes and every shard's hash;
    ``holdout`` (None without ``--holdout``) says which split was carved from which, how many, and the seed."""
    split_objs = {
        name: {
            "count": s.count,
            "skipped": s.skipped,
            "skipped_keys": list(s.skipped_keys),
            "shards": [{"name": sh.name, "count": sh.count, "sha256": sh.sha256} for sh in s.shards],
        }
        for name, s in splits.items()
    }
    return {
        "format_version": FORMAT_VERSION,
        "dataset": dataset,
        "classes": list(classes),
        "num_classes": len(classes),
        "splits": split_objs,
        "skipped": sum(s.skipped for s in splits.values()),
        "content_hash": content_hash(classes, splits),
        "source": source,
        "writer": writer,
        "extra": extra or {},
        "holdout": holdout,
    }


def content_hash(classes: list[str] | tuple[str, ...], splits: dict[str, Split]) -> str:
    """SHA-256 over the class list and every shard's (split, name, count, sha256): equal hash ⇒ equal data."""
    h = hashlib.sha256(json.dumps(list(classes)).encode())
    for name in sorted(splits):
        for sh in splits[name].shards:
            h.update(f"{name}/{sh.name}/{sh.count}/{sh.sha256}\n".encode())
    return h.hexdigest()


def load_manifest(root: str | os.PathLike[str]) -> Manifest:
    """Read and check ``<root>/manifest.json``; a PipelineError saying what to do if it is missing or malformed."""
    root = os.fspath(root)
    url = shard_url(root, MANIFEST)
    if is_local(root) and not Path(url).is_file():
        raise PipelineError(f"no shard manifest at {url}; write shards first: pipeline shards <dataset> --out {root}")
    try:
        with gopen(url, "rb") as f:
            obj = json.loads(f.read())
    except (OSError, ValueError) as err:
        raise PipelineError(f"cannot read shard manifest {url}: {err}; rewrite it with `pipeline shards`") from err
    return parse_manifest(root, obj, url)


def parse_manifest(root: str, obj: Any, where: str = MANIFEST) -> Manifest:
    """Build a Manifest from the decoded JSON ``obj``; a PipelineError for a missing or ill-typed field."""
    try:
        if obj["format_version"] != FORMAT_VERSION:
            raise PipelineError(
                f"{where}: format_version {obj['format_version']} is not {FORMAT_VERSION}; rewrite the shards"
            )
        splits = {
            name: Split(
                name=name,
                shards=tuple(Shard(str(s["name"]), int(s["count"]), str(s["sha256"])) for s in sp["shards"]),
                skipped_keys=tuple(str(k) for k in sp.get("skipped_keys", ())),
            )
            for name, sp in obj["splits"].items()
        }
        manifest = Manifest(
            root=root,
            dataset=str(obj["dataset"]),
            classes=tuple(str(c) for c in obj["classes"]),
            splits=splits,
            content_hash=str(obj["content_hash"]),
            source=dict(obj.get("source", {})),
            writer=dict(obj.get("writer", {})),
            extra=dict(obj.get("extra", {})),
            holdout=dict(obj["holdout"]) if obj.get("holdout") else None,
        )
    except (KeyError, TypeError, ValueError, AttributeError) as err:
        raise PipelineError(f"{where} is not a shard manifest (bad or missing field {err}); rewrite it") from err
    if not manifest.classes or not manifest.splits:
        raise PipelineError(f"{where} lists no classes or no splits; rewrite the shards")
    return manifest
