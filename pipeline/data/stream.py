"""Streaming shards under DDP: exact train epochs with equal batch counts per rank, exact eval, resumable.

Every DataLoader worker of every rank is one *slot*: ``slot = role * world_size + rank`` of
``num_slots = workers * world_size`` (worker-major, so a few shards spread over ranks before workers), where
``workers = max(num_workers, 1)`` and ``role`` is the worker's id (rotated on a mid-epoch resume, below).

**Train** (exact epochs, equal batches on every rank — field pitfalls 1–3, 9): the epoch is
``⌊N / (world_size · batch)⌋`` batches per rank. A DataLoader takes batch ``i`` of a rank from worker
``i mod workers``, so role ``r`` owes ``⌈(batches − r) / workers⌉`` batches. Each epoch, a seeded permutation
of the shards is concatenated into one sequence of all ``N`` samples; slot ``j`` gets the ``j``-th
contiguous range of it, exactly ``batch ×`` its batches long (the last ``N mod (world_size · batch)``
samples — fewer than one global batch, a different tail each epoch — are the cut). So every sample the cut
allows is read exactly once per epoch across ranks × workers, for any number of shards versus slots (a
shard may be split over slots; each reads only its range, stopping early in the tar). A slot mixes its
ranges by reading up to ``OPEN_SHARDS`` of them at once, drawing the next sample from one at random
(weighted by what each has left), through a shuffle buffer of ``shuffle_buffer`` samples that is drained
completely before the slot's last batch. All of it is seeded by ``(seed, epoch, slot)``, so the order
changes every epoch and never depends on wall-clock or process ids.

**Augmentation draws** are seeded per sample: before each train sample is decoded, ``random``, ``numpy``
and torch's CPU generator are seeded from ``(seed, epoch, shard, index in shard)`` (and the caller's
states are given back after each batch, so the main process's RNGs are untouched when there are no
workers). A sample's augmentation therefore depends neither on which rank or worker reads it nor on what
was decoded before it, which is what makes a mid-epoch resume exact without replaying anything.

**Corrupt samples** (bad image bytes, missing ``cls``, truncated or unreadable tar) are skipped and counted
without webdataset's ``warn_and_continue`` 0.5 s sleep (pitfall 7); samples a broken tar loses are counted
from the manifest's per-shard counts. In training, a corrupt or missing sample at position ``p`` of a slot's
range is replaced by the sample at position ``p`` of a *spare* re-reading of the same range in another
seeded order (up to ``SPARE_TRIES`` spares; only if all are corrupt too does that batch come out one short,
and a batch left empty is an error). So every rank still yields its exact number of full batches, and which
sample fills position ``p`` depends only on ``p`` and the data, never on what happened before it.

**Resume** (pitfall 10): :class:`ShardLoader` has ``state_dict`` / ``load_state_dict`` (Lightning saves and
restores them with the fit loop): the state is ``(epoch, batches already yielded)``. On restore, worker
``w`` plays role ``(w + batches) mod workers`` (the DataLoader's round robin restarts at worker 0) and skips
the raw samples of the batches its role already yielded *before* decoding them (the tars are read, nothing
is decoded or augmented). The resumed epoch then yields exactly the batches, samples, order and augmentation
draws of the uninterrupted one.

**Eval** (exact — pitfall 6): whole shards go round-robin to slots while a full round remains; each of the
``r`` leftover shards is read by the slots ``j ≡ q (mod r)``, which keep every ``stride``-th sample at their
own offset. Every sample is decoded exactly once across ranks × workers, batch counts may differ by rank
(the training module does no per-step collectives in eval), and each rank's count is known from the
manifest. A batch is ``(images, labels, skipped)``, ``skipped`` the corrupt samples the worker dropped since
its previous batch; eval batches are emitted one behind, so skips after a worker's last sample ride on its
last batch and the total is exact (only a worker whose every sample is corrupt has no batch to carry its
count; it is still logged). A train slot stops reading when its last batch is full, so its batches are
emitted at once.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
import torch
import webdataset as wds
from torch.utils.data import DataLoader, IterableDataset, default_collate, get_worker_info

from pipeline.errors import PipelineError

log = logging.getLogger(__name__)

Batch = tuple[Any, ...]  # (images uint8[B,3,H,W], labels long[B], skipped long[]) [+ keys list[str]]
Piece = tuple[int, int, int]  # (shard, first index, end index): samples first ≤ i < end of one shard
_MAX_WARNINGS = 5  # per worker and epoch: the count is exact, the log stays short
OPEN_SHARDS = 4  # shard ranges a train slot reads at once (mixing across shards; each is an open tar stream)
SPARE_TRIES = 3  # spare re-readings tried for a corrupt train sample before its batch comes out one short


def mix(*values: int) -> int:
    """A 63-bit seed from integers, well mixed (numpy's SeedSequence; a plain polynomial hash would give
    ``(shard, 31)`` and ``(shard + 1, 0)`` the same seed)."""
    return int(np.random.SeedSequence([v & 0xFFFFFFFF for v in values]).generate_state(2, np.uint64)[0] >> 1)


def worker() -> tuple[int, int]:
    """``(worker id, workers)`` of the calling DataLoader worker; ``(0, 1)`` in the main process."""
    info = get_worker_info()
    return (info.id, info.num_workers) if info is not None else (0, 1)


def role_batches(batches: int, workers: int) -> list[int]:
    """Batches each worker role yields when a rank's DataLoader takes batch ``i`` from worker ``i mod workers``."""
    return [len(range(r, batches, workers)) for r in range(workers)]


def train_plan(counts: list[int], world_size: int, workers: int, batch_size: int, seed: int, epoch: int
               ) -> list[list[Piece]]:
    """Per slot ``role * world_size + rank``: the shard ranges it reads in ``epoch`` (disjoint, each sample once).

    The shards, permuted by ``(seed, epoch)``, form one sequence; slot ``j`` gets the ``j``-th contiguous range,
    ``batch_size ×`` its role's batches long; what is left (< one global batch) is the epoch's cut.
    """
    per_role = role_batches(sum(counts) // (world_size * batch_size), workers)
    order = list(range(len(counts)))
    random.Random(mix(seed, epoch)).shuffle(order)
    plan: list[list[Piece]] = []
    at, pos = 0, 0  # position `pos` within shard order[at]
    for j in range(workers * world_size):
        need, pieces = per_role[j // world_size] * batch_size, []
        while need:
            take = min(need, counts[order[at]] - pos)
            if take:
                pieces.append((order[at], pos, pos + take))
            need, pos = need - take, pos + take
            if pos == counts[order[at]]:
                at, pos = at + 1, 0
        plan.append(pieces)
    return plan


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


def interleave(readers: list[Callable[[], Iterator[dict]]], sizes: list[int], rng: random.Random,
               width: int) -> Iterator[dict]:
    """Samples of ``readers`` (opened ``width`` at a time, in order), each drawn from an open reader chosen at
    random with weight its remaining size: a uniformly random merge of the open ones."""
    pending = list(zip(readers, sizes, strict=True))[::-1]
    open_: list[list[Any]] = []  # [iterator, remaining]
    while pending or open_:
        while pending and len(open_) < width:
            make, size = pending.pop()
            open_.append([make(), size])
        i = rng.choices(range(len(open_)), weights=[max(o[1], 1) for o in open_])[0]
        sample = next(open_[i][0], None)
        if sample is None:
            del open_[i]
            continue
        open_[i][1] -= 1
        yield sample


@contextmanager
def own_rngs() -> Iterator[None]:
    """Give the caller's ``random`` / numpy / torch CPU RNG states back after a block that reseeds them."""
    states = random.getstate(), np.random.get_state(), torch.random.get_rng_state()
    try:
        yield
    finally:
        random.setstate(states[0])
        np.random.set_state(states[1])
        torch.random.set_rng_state(states[2])


def seed_rngs(seed: int) -> None:
    """Seed ``random``, numpy and torch's CPU generator (not CUDA's: the training step's RNG) for one sample."""
    random.seed(seed)
    np.random.seed(seed & 0xFFFFFFFF)
    torch.random.default_generator.manual_seed(seed)


class ShardStream(IterableDataset):
    """Batches ``(images, labels, skipped)`` from one split's shards for the calling rank and worker.

    ``train=True``: exactly :meth:`train_batches` shuffled batches per rank per epoch (every sample the cut
    allows once), from the position :meth:`set_epoch` selects; ``train=False``: exact, in order, last batch
    partial. ``keys=True`` appends the list of sample keys to each batch (for tests and debugging; the
    training contract is the 3-tuple).
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
        self.shuffle_buffer, self.keys, self.epoch, self.start = shuffle_buffer, keys, 0, 0

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        """Select the epoch and the batches of it already yielded; call before creating the iterator."""
        self.epoch, self.start = epoch, start

    def train_batches(self) -> int:
        """Train batches per rank per epoch: ⌊N / (world_size · batch_size)⌋."""
        return sum(self.counts) // (self.world_size * self.batch_size)

    def eval_batches(self, num_workers: int) -> int:
        """Exact number of eval batches this rank yields with ``num_workers`` loader workers (none corrupt)."""
        plan = eval_plan(len(self.urls), max(num_workers, 1) * self.world_size)
        total = 0
        for w in range(max(num_workers, 1)):
            n = sum(len(range(o, self.counts[i], s)) for i, s, o in plan[w * self.world_size + self.rank])
            total += -(-n // self.batch_size)
        return total

    def __iter__(self) -> Iterator[Batch]:
        worker_id, workers = worker()
        if self.train:
            role = (worker_id + self.start) % workers
            slot = role * self.world_size + self.rank
            counter = SkipCounter(f"rank {self.rank} slot {slot}")
            return self._train_batches(slot, role, workers, counter)
        slot = worker_id * self.world_size + self.rank
        counter = SkipCounter(f"rank {self.rank} slot {slot}")
        samples = (
            s
            for i, stride, offset in eval_plan(len(self.urls), workers * self.world_size)[slot]
            for s in read_shard(self.urls[i], self.counts[i], counter, range(offset, self.counts[i], stride), i)
        )
        return self._eval_batches(samples, counter)

    # --- train ---------------------------------------------------------------------------------------------
    def _pass(self, pieces: list[Piece], slot: int, which: tuple[int, ...], counter: SkipCounter | None
              ) -> Iterator[dict]:
        """One reading of ``pieces`` in the order seeded by ``(seed, epoch, slot, *which)``; every sample once."""
        rng = random.Random(mix(self.seed, self.epoch, slot, *which))
        pieces = list(pieces)
        rng.shuffle(pieces)
        readers = [lambda s=s, a=a, b=b: read_shard(self.urls[s], self.counts[s], counter, range(a, b), s)
                   for s, a, b in pieces]
        mixed = interleave(readers, [b - a for _, a, b in pieces], rng, OPEN_SHARDS)
        for sample in wds.filters.shuffle(self.shuffle_buffer, initial=self.shuffle_buffer, rng=rng)(mixed):
            sample["__seed__"] = mix(self.seed, self.epoch, sample["__shard__"], sample["__index__"], *which)
            yield sample

    def _spare(self, pieces: list[Piece], slot: int, t: int) -> Iterator[dict]:
        """Spare ``t``: endless re-readings of ``pieces`` in new orders (PipelineError if none is readable)."""
        cycle = 0
        while True:
            got = 0
            for sample in self._pass(pieces, slot, (t, cycle), None):
                got += 1
                yield sample
            if not got:
                raise PipelineError(f"no readable samples in {len(pieces)} train shard range(s) ({self.urls[0]} …)")
            cycle += 1

    def _train_batches(self, slot: int, role: int, workers: int, counter: SkipCounter) -> Iterator[Batch]:
        plan = train_plan(self.counts, self.world_size, workers, self.batch_size, self.seed, self.epoch)
        pieces, total = plan[slot], role_batches(self.train_batches(), workers)[role]
        done = len(range(role, self.start, workers))  # batches this role yielded before a resume
        main = self._pass(pieces, slot, (0,), counter)
        for _ in range(done * self.batch_size):  # skip what was consumed: tars are read, nothing is decoded
            next(main, None)
        spares: list[list[Any]] = []  # [iterator, next position] per spare, opened when first needed
        for b in range(done, total):
            buf: list[tuple[torch.Tensor, int]] = []
            keys: list[str] = []
            with own_rngs():
                for p in range(b * self.batch_size, (b + 1) * self.batch_size):
                    sample = next(main, None)
                    for t in range(SPARE_TRIES + 1):
                        if t:
                            sample = self._spare_at(spares, pieces, slot, t, p)
                        if sample is not None and self._decode_into(sample, buf, keys, counter):
                            break
            if not buf:
                raise PipelineError(f"no decodable samples for a train batch of rank {self.rank} "
                                    f"({self.urls[0]} …): are the shards corrupt?")
            yield self._emit(self._collate(buf, keys), counter)

    def _spare_at(self, spares: list[list[Any]], pieces: list[Piece], slot: int, t: int, p: int) -> dict:
        while len(spares) < t:
            spares.append([self._spare(pieces, slot, len(spares) + 1), 0])
        spare = spares[t - 1]
        while True:  # positions only grow, so each spare is read forward once
            sample = next(spare[0])
            spare[1] += 1
            if spare[1] > p:
                return sample

    # --- shared --------------------------------------------------------------------------------------------
    def _decode_into(self, sample: dict, buf: list, keys: list[str], counter: SkipCounter) -> bool:
        """Decode one sample into ``buf`` (seeded per sample when it carries ``__seed__``); count a failure."""
        try:
            if "__seed__" in sample:
                seed_rngs(sample["__seed__"])
            buf.append(self.decode(sample))
        except Exception as err:  # any failure to decode one sample makes it a corrupt sample
            counter.add(1, f"{sample.get('__key__')!r} from {sample.get('__url__')}: {type(err).__name__}: {err}")
            return False
        keys.append(sample["__key__"])
        return True

    def _eval_batches(self, samples: Iterator[dict], counter: SkipCounter) -> Iterator[Batch]:
        ready: Batch | None = None
        buf: list[tuple[torch.Tensor, int]] = []
        keys: list[str] = []
        for sample in samples:
            if self._decode_into(sample, buf, keys, counter) and len(buf) == self.batch_size:
                if ready is not None:
                    yield self._emit(ready, counter)
                ready, buf, keys = self._collate(buf, keys), [], []
        if buf:
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
    """A DataLoader over a :class:`ShardStream` that knows its length, can resume mid-epoch, and logs throughput.

    ``num_batches`` is the epoch length: a train loader stops after exactly that many batches; an eval loader
    runs its stream to the end (``num_batches`` is then its exact length). Each ``iter()`` sets the stream's
    position before the workers start (workers are not persistent, so they see it): the epoch from
    ``epoch_fn`` (e.g. the trainer's epochs processed, so requeued runs continue the sequence; else a
    counter) and batch 0 — or, once after :meth:`load_state_dict`, the restored ``(epoch, batches)``, so a
    run stopped after any batch goes on with the very next one. When an epoch's last batch is fetched it logs
    images/s, the time spent waiting for data and the skipped samples (one INFO line per rank); ``last_epoch``
    keeps those numbers for callers (e.g. a callback reading ``trainer.train_dataloader.last_epoch``).
    """

    def __init__(
        self,
        dataset: ShardStream,
        num_batches: int,
        num_workers: int = 0,
        name: str = "train",
        epoch_fn: Callable[[], int] | None = None,
        pin_memory: bool = False,
        epoch_done_fn: Callable[[], bool] | None = None,
    ) -> None:
        # an own generator: DataLoader draws its workers' base seed from it on every iter(), which would
        # otherwise advance the training process's torch RNG (the stream seeds its own draws per sample)
        super().__init__(dataset, batch_size=None, num_workers=num_workers, pin_memory=pin_memory,
                         generator=torch.Generator())
        self.num_batches, self.name, self.epoch_fn, self.epoch_done_fn = num_batches, name, epoch_fn, epoch_done_fn
        self.last_epoch: dict[str, float] = {}
        self._iterations = 0
        self._position: tuple[int, int] | None = None  # (epoch, batches yielded) of the current iterator
        self._restored: tuple[int, int] | None = None

    def __len__(self) -> int:
        return self.num_batches

    def state_dict(self) -> dict[str, int]:
        """``{"epoch", "batches"}``: where the current epoch stands (Lightning stores it in checkpoints).

        Lightning takes the next batch only when it runs it (no prefetch for a loader with a length), so
        ``batches`` is exactly the number of batches trained on in this epoch. An epoch that is over — all
        its batches, or ``epoch_done_fn()`` (the trainer's epoch may be cut short, e.g. by
        ``limit_train_batches``) — is saved as the start of the next one.
        """
        if self._position is None:
            return {}
        epoch, batches = self._position
        if batches >= self.num_batches or (self.epoch_done_fn is not None and self.epoch_done_fn()):
            epoch, batches = epoch + 1, 0
        return {"epoch": epoch, "batches": batches}

    def load_state_dict(self, state: dict[str, int]) -> None:
        """Make the next ``iter()`` continue from ``state`` (a train epoch after its first ``batches``)."""
        if state and self.dataset.train:
            self._restored = (int(state["epoch"]), int(state["batches"]))

    def __iter__(self) -> Iterator[Batch]:  # type: ignore[override]
        epoch = self.epoch_fn() if self.epoch_fn is not None else self._iterations
        start = 0
        if self._restored is not None:
            restored, self._restored = self._restored, None
            # unless the trainer counts that epoch as processed already (then its epoch counter is right)
            if self.epoch_fn is None or restored[0] >= epoch:
                epoch, start = restored
        self._iterations = epoch + 1
        self._position = (epoch, start)
        self.dataset.set_epoch(epoch, start)
        return self._timed(super().__iter__(), epoch, start)

    def _timed(self, batches: Iterator[Batch], epoch: int, start: int) -> Iterator[Batch]:
        stream: ShardStream = self.dataset
        begin = time.perf_counter()
        wait = 0.0
        images = skipped = 0
        count = start
        while count < self.num_batches or not stream.train:
            t = time.perf_counter()
            try:
                batch = next(batches)
            except StopIteration:
                break
            wait += time.perf_counter() - t
            count += 1
            self._position = (epoch, count)
            images += len(batch[1])
            skipped += int(batch[2])
            if count == self.num_batches:  # Lightning stops calling next() here: report before the last yield
                self._report(epoch, count - start, images, skipped, time.perf_counter() - begin, wait)
                # and drop the workers now, not when the next epoch replaces this generator: a train stream's
                # workers would otherwise sit through validation holding prefetched batches
                batches = iter(())
            yield batch
        if count != self.num_batches:  # an eval stream that lost batches to corrupt samples
            self._report(epoch, count - start, images, skipped, time.perf_counter() - begin, wait)

    def _report(self, epoch: int, batches: int, images: int, skipped: int, seconds: float, wait: float) -> None:
        self.last_epoch = {"epoch": epoch, "batches": batches, "images": images, "seconds": seconds,
                           "images_per_s": images / max(seconds, 1e-9), "wait_seconds": wait, "skipped": skipped}
        log.info(
            "%s epoch %d rank %d: %d images in %d batches, %.1f s (%.0f images/s), %.1f s (%.0f%%) waiting "
            "for data, %d corrupt samples skipped",
            self.name, epoch, self.dataset.rank, images, batches, seconds, images / max(seconds, 1e-9), wait,
            100 * wait / max(seconds, 1e-9), skipped,
        )
