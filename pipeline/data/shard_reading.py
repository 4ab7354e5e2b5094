"""Reading samples out of tar shards: index ranges of one shard, random merges of several, corrupt data counted.

:func:`read_shard` yields the raw samples of one shard whose index is in a given range, tagged with their
shard and index, and stops reading the tar after the last one. :func:`interleave` merges several such readers,
a few open at a time, into one uniformly random order.

**Corrupt data** (truncated or unreadable tars here; bad image bytes or a missing ``cls`` where a sample is
decoded) is skipped and counted on a :class:`SkipCounter`, which logs only the first few per worker and epoch
and never sleeps: webdataset's ``warn_and_continue`` handler sleeps 0.5 s per exception, fine for a rare bad
sample and ruinous for a bad shard. Samples a broken tar loses are counted from the manifest's per-shard
counts, so the total is exact.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch
import webdataset as wds

log = logging.getLogger(__name__)

_MAX_WARNINGS = 5  # per worker and epoch: the count is exact, the log stays short


class SkipCounter:
    """Counts corrupt samples (and logs the first few) without sleeping; ``take()`` returns and resets."""

    def __init__(self, where: str) -> None:
        self.where, self.pending, self.total = where, 0, 0

    def add(self, n: int, reason: str) -> None:
        """Record ``n`` skipped samples."""
        if n <= 0:
            return
        if self.total < _MAX_WARNINGS:
            log.warning("%s: skipped %d corrupt sample(s): %s", self.where, n, reason)
        self.pending += n
        self.total += n

    def tar_error(self, exn: Exception) -> bool:
        """webdataset handler for tar-level errors: log and go on (the lost samples are counted per shard)."""
        if self.total < _MAX_WARNINGS:
            log.warning("%s: unreadable tar data: %s", self.where, exn)
        return True

    def take(self) -> torch.Tensor:
        """The count since the previous call, as a long scalar tensor."""
        n, self.pending = self.pending, 0
        return torch.tensor(n, dtype=torch.long)


def read_shard(url: str, expected: int, counter: SkipCounter | None, keep: range, shard: int = 0) -> Iterator[dict]:
    """Raw samples ``i in keep`` of one shard (``__shard__``/``__index__`` added), stopping after the last one.

    Samples of ``keep`` a broken tar loses are counted on ``counter`` (None: not counted, e.g. a re-reading).
    """
    seen = got = 0
    last = keep[-1] if keep else -1
    if last >= 0:
        for sample in wds.tarfile_samples([{"url": url}], handler=(counter or SkipCounter(url)).tar_error):
            if seen in keep:
                sample["__shard__"], sample["__index__"] = shard, seen
                got += 1
                yield sample
            seen += 1
            if seen > last:
                return
    if counter is not None and got < len(keep):
        counter.add(len(keep) - got, f"{url} ended after {seen} of {expected} samples (truncated or corrupt tar)")


@dataclass
class _OpenReader:
    """One reader :func:`interleave` has opened, and how many samples it is still expected to give."""

    samples: Iterator[dict]
    remaining: int


def interleave(readers: list[Callable[[], Iterator[dict]]], sizes: list[int], rng: random.Random,
               width: int) -> Iterator[dict]:
    """Samples of ``readers`` (opened ``width`` at a time, in order), each drawn from an open reader chosen at
    random with weight its remaining size: a uniformly random merge of the open ones."""
    pending = list(zip(readers, sizes, strict=True))[::-1]
    open_: list[_OpenReader] = []
    while pending or open_:
        while pending and len(open_) < width:
            make, size = pending.pop()
            open_.append(_OpenReader(make(), size))
        i = rng.choices(range(len(open_)), weights=[max(o.remaining, 1) for o in open_])[0]
        sample = next(open_[i].samples, None)
        if sample is None:
            del open_[i]
            continue
        open_[i].remaining -= 1
        yield sample
