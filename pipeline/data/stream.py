"""Streaming shards under DDP: train with equal batch counts on every rank, eval exact.

Every DataLoader worker of every rank is one *slot*: ``slot = worker * world_size + rank`` of
``num_slots = num_workers * world_size`` (worker-major, so a few shards spread over ranks before workers).

**Train** (fixed length, no rank ever runs out — field pitfalls 1–3): all slots agree on an endless shard
sequence, the concatenation of seeded permutations ``perm(seed, epoch, round)`` of the shard list, and
slot ``j`` reads positions ``j, j + num_slots, …`` of it. So within an epoch the slots read disjoint shards
until they spill into the next round, every slot always has data (also with fewer shards than slots),
and the order changes every epoch. Each slot shuffles samples through a buffer seeded by
``(seed, epoch, slot)`` and, inside a worker, re-seeds ``random``/``torch``/``numpy`` the same way, so
augmentations differ across ranks and workers even when Lightning seeds all ranks alike. The stream is
endless; :class:`ShardLoader` (the *loader*, not the dataset — pitfall 2) stops after exactly
``⌊N / (world_size · batch)⌋`` batches. This is "repeat", not resampling with replacement: an epoch reads
(almost) every sample once, where resampled shards would read some shards twice and skip others.

**Eval** (exact — pitfall 6): whole shards go round-robin to slots while a full round remains; each of the
``r`` leftover shards is read by the slots ``j ≡ q (mod r)``, which keep every ``stride``-th sample at their
own offset. Every sample is decoded exactly once across ranks × workers, batch counts may differ by rank
(the training module does no per-step collectives in eval), and each rank's count is known from the
manifest.

**Corrupt samples** (bad image bytes, missing ``cls``, truncated or unreadable tar) are skipped and counted
without webdataset's ``warn_and_continue`` 0.5 s sleep (pitfall 7); samples a broken tar loses are counted
from the manifest's per-shard counts. A batch is ``(images, labels, skipped)`` where ``skipped`` is the
number dropped by that worker since its previous batch; batches are emitted one behind, so skips after a
worker's last sample ride on its last batch and the total is exact (only a worker whose every sample is
corrupt has no batch to carry its count; it is still logged).
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import torch
import webdataset as wds
from torch.utils.data import DataLoader, IterableDataset, default_collate, get_worker_info
from webdataset.utils import make_seed

from pipeline.errors import PipelineError

log = logging.getLogger(__name__)

Batch = tuple[Any, ...]  # (images float[B,3,H,W], labels long[B], skipped long[]) [+ keys list[str]]
_MAX_WARNINGS = 5  # per worker and epoch: the count is exact, the log stays short


def slot_of(rank: int, world_size: int) -> tuple[int, int]:
    """``(slot, num_slots)`` of the calling DataLoader worker (or main process) on ``rank``."""
    info = get_worker_info()
    worker, num_workers = (info.id, info.num_workers) if info is not None else (0, 1)
    return worker * world_size + rank, num_workers * world_size


def train_positions(num_shards: int, slot: int, num_slots: int, seed: int, epoch: int) -> Iterator[int]:
    """Endless shard indices for ``slot``: every ``num_slots``-th entry of the concatenated permutations."""
    position, round_ = 0, 0
    while True:
        order = list(range(num_shards))
        random.Random(make_seed(seed, epoch, round_)).shuffle(order)
        for shard in order:
            if position % num_slots == slot:
                yield shard
            position += 1
        round_ += 1


def eval_plan(num_shards: int, num_slots: int) -> list[list[tuple[int, int, int]]]:
    """Per slot, the ``(shard, stride, offset)`` reads that cover every sample exactly once.

    A slot keeps sample ``i`` of a shard iff ``i % stride == offset``.
    """
    full = num_shards - num_shards % num_slots
    leftover = num_shards - full
    plan: list[list[tuple[int, int, int]]] = []
    for j in range(num_slots):
        reads = [(i, 1, 0) for i in range(j, full, num_slots)]
        if leftover:
            q = j % leftover
            reads.append((full + q, len(range(q, num_slots, leftover)), j // leftover))
        plan.append(reads)
    return plan


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


def read_shard(url: str, expected: int, counter: SkipCounter, stride: int = 1, offset: int = 0) -> Iterator[dict]:
    """Raw samples ``i`` of one shard with ``i % stride == offset``; samples a broken tar loses are counted."""
    seen = 0
    for sample in wds.tarfile_samples([{"url": url}], handler=counter.tar_error):
        if seen % stride == offset:
            yield sample
        seen += 1
    if seen < expected:
        counter.add(len(range(offset, expected, stride)) - len(range(offset, seen, stride)),
                    f"{url} ended after {seen} of {expected} samples (truncated or corrupt tar)")


class ShardStream(IterableDataset):
    """Batches ``(images, labels, skipped)`` from one split's shards for the calling rank and worker.

    ``train=True``: endless, shuffled (cut to length by :class:`ShardLoader`); ``train=False``: exact, in
    order, last batch partial. ``keys=True`` appends the list of sample keys to each batch (for tests and
    debugging; the training contract is the 3-tuple).
    """

    def __init__(
        self,
        urls: list[str],
        counts: list[int],
        decode: Callable[[dict], tuple[torch.Tensor, int]],
        batch_size: int,
        *,
        train: bool,
        rank: int = 0,
        world_size: int = 1,
        seed: int = 0,
        shuffle_buffer: int = 1000,
        keys: bool = False,
    ) -> None:
        super().__init__()
        if not urls or len(urls) != len(counts):
            raise PipelineError("a shard stream needs at least one shard and one count per shard")
        self.urls, self.counts, self.decode, self.batch_size = list(urls), list(counts), decode, batch_size
        self.train, self.rank, self.world_size, self.seed = train, rank, world_size, seed
        self.shuffle_buffer, self.keys, self.epoch = shuffle_buffer, keys, 0

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch (train order and augmentation seeds); call before creating the iterator."""
        self.epoch = epoch

    def eval_batches(self, num_workers: int) -> int:
        """Exact number of eval batches this rank yields with ``num_workers`` loader workers (none corrupt)."""
        plan = eval_plan(len(self.urls), max(num_workers, 1) * self.world_size)
        total = 0
        for worker in range(max(num_workers, 1)):
            n = sum(len(range(o, self.counts[i], s)) for i, s, o in plan[worker * self.world_size + self.rank])
            total += -(-n // self.batch_size)
        return total

    def __iter__(self) -> Iterator[Batch]:
        slot, num_slots = slot_of(self.rank, self.world_size)
        counter = SkipCounter(f"rank {self.rank} slot {slot}")
        if self.train:
            samples = self._train_samples(slot, num_slots, counter)
        else:
            samples = (
                s
                for i, stride, offset in eval_plan(len(self.urls), num_slots)[slot]
                for s in read_shard(self.urls[i], self.counts[i], counter, stride, offset)
            )
        return self._batches(samples, counter)

    def _train_samples(self, slot: int, num_slots: int, counter: SkipCounter) -> Iterator[dict]:
        seed = make_seed(self.seed, self.epoch, slot)
        if get_worker_info() is not None:  # a worker owns its global RNGs; the main process's are left alone
            random.seed(seed)
            torch.manual_seed(seed)
            np.random.seed(seed % 2**32)

        def shards() -> Iterator[dict]:
            empty_in_a_row = 0
            for i in train_positions(len(self.urls), slot, num_slots, self.seed, self.epoch):
                got = 0
                for sample in read_shard(self.urls[i], self.counts[i], counter):
                    got += 1
                    yield sample
                empty_in_a_row = 0 if got else empty_in_a_row + 1
                if empty_in_a_row > 2 * len(self.urls) + num_slots:
                    raise PipelineError(f"no readable samples in {len(self.urls)} train shards ({self.urls[0]} …)")

        return wds.filters.shuffle(self.shuffle_buffer, initial=self.shuffle_buffer, rng=random.Random(seed))(
            shards()
        )

    def _batches(self, samples: Iterator[dict], counter: SkipCounter) -> Iterator[Batch]:
        ready: Batch | None = None
        buf: list[tuple[torch.Tensor, int]] = []
        keys: list[str] = []
        failed_in_a_row = 0
        for sample in samples:
            try:
                buf.append(self.decode(sample))
            except Exception as err:  # any failure to decode one sample makes it a corrupt sample
                counter.add(1, f"{sample.get('__key__')!r} from {sample.get('__url__')}: {type(err).__name__}: {err}")
                failed_in_a_row += 1
                if self.train and failed_in_a_row > sum(self.counts):  # the endless stream would never yield
                    raise PipelineError(f"no decodable samples in the train shards ({self.urls[0]} …)") from err
                continue
            failed_in_a_row = 0
            keys.append(sample["__key__"])
            if len(buf) == self.batch_size:
                if ready is not None:
                    yield self._emit(ready, counter)
                ready, buf, keys = self._collate(buf, keys), [], []
        if buf and not self.train:
            if ready is not None:
                yield self._emit(ready, counter)
            ready = self._collate(buf, keys)
        if ready is not None:
            yield self._emit(ready, counter)

    def _collate(self, buf: list[tuple[torch.Tensor, int]], keys: list[str]) -> Batch:
        images, labels = default_collate(buf)
        return images, labels, keys

    def _emit(self, ready: Batch, counter: SkipCounter) -> Batch:
        images, labels, keys = ready
        return (images, labels, counter.take(), keys) if self.keys else (images, labels, counter.take())


class ShardLoader(DataLoader):
    """A DataLoader over a :class:`ShardStream` that knows its length and logs its throughput.

    ``num_batches`` is the epoch length: a train loader stops after exactly that many batches (the stream
    is endless); an eval loader runs its stream to the end (``num_batches`` is then its exact length).
    Each ``iter()`` sets the stream's epoch (from ``epoch_fn``, e.g. the trainer's epoch, so requeued runs
    continue the sequence; else a counter) before the workers start — workers are not persistent, so they
    see it. When an epoch's last batch is fetched it logs images/s, the time spent waiting for data and the
    skipped samples (one INFO line per rank); ``last_epoch`` keeps those numbers for callers (e.g. a
    callback reading ``trainer.train_dataloader.last_epoch``).
    """

    def __init__(
        self,
        dataset: ShardStream,
        num_batches: int,
        num_workers: int = 0,
        name: str = "train",
        epoch_fn: Callable[[], int] | None = None,
        pin_memory: bool = False,
    ) -> None:
        super().__init__(dataset, batch_size=None, num_workers=num_workers, pin_memory=pin_memory)
        self.num_batches, self.name, self.epoch_fn = num_batches, name, epoch_fn
        self.last_epoch: dict[str, float] = {}
        self._iterations = 0

    def __len__(self) -> int:
        return self.num_batches

    def __iter__(self) -> Iterator[Batch]:  # type: ignore[override]
        epoch = self.epoch_fn() if self.epoch_fn is not None else self._iterations
        self._iterations += 1
        self.dataset.set_epoch(epoch)
        return self._timed(super().__iter__(), epoch)

    def _timed(self, batches: Iterator[Batch], epoch: int) -> Iterator[Batch]:
        stream: ShardStream = self.dataset
        start = time.perf_counter()
        wait = 0.0
        images = skipped = count = 0
        while count < self.num_batches or not stream.train:
            t = time.perf_counter()
            try:
                batch = next(batches)
            except StopIteration:
                break
            wait += time.perf_counter() - t
            count += 1
            images += len(batch[1])
            skipped += int(batch[2])
            if count == self.num_batches:  # Lightning stops calling next() here: report before the last yield
                self._report(epoch, count, images, skipped, time.perf_counter() - start, wait)
                # and drop the workers now, not when the next epoch replaces this generator: an endless train
                # stream's workers would otherwise sit through validation holding prefetched batches
                batches = iter(())
            yield batch
        if count != self.num_batches:  # an eval stream that lost batches to corrupt samples
            self._report(epoch, count, images, skipped, time.perf_counter() - start, wait)

    def _report(self, epoch: int, batches: int, images: int, skipped: int, seconds: float, wait: float) -> None:
        self.last_epoch = {"epoch": epoch, "batches": batches, "images": images, "seconds": seconds,
                           "images_per_s": images / max(seconds, 1e-9), "wait_seconds": wait, "skipped": skipped}
        log.info(
            "%s epoch %d rank %d: %d images in %d batches, %.1f s (%.0f images/s), %.1f s (%.0f%%) waiting "
            "for data, %d corrupt samples skipped",
            self.name, epoch, self.dataset.rank, images, batches, seconds, images / max(seconds, 1e-9), wait,
            100 * wait / max(seconds, 1e-9), skipped,
        )
