"""``ShardStream``: the IterableDataset that turns a split's shards into batches for one rank and worker.

Which samples each worker of each rank reads is planned in :mod:`pipeline.data.plans` (train: equal batch
counts on every rank and every sample the epoch's cut allows read exactly once; eval: every sample exactly
once); reading the tars is :mod:`pipeline.data.shard_reading`; resuming and throughput are
:class:`pipeline.data.loader.ShardLoader`'s.

**Train**: a slot mixes its planned ranges by reading up to ``OPEN_SHARDS`` of them at once, drawing the next
sample from one at random (weighted by what each has left), through a shuffle buffer of ``shuffle_buffer``
samples that is drained completely before the slot's last batch (a buffer cut off at a fixed batch count
would leave its contents unread and pull the next epoch's samples early). All of it is seeded by
``(seed, epoch, slot)``, so the order changes every epoch and never depends on wall-clock or process ids.
A train slot stops reading when its last batch is full, so its batches are emitted at once.

**Augmentation draws** are seeded per sample: before each train sample is decoded, ``random``, ``numpy``
and torch's CPU generator are seeded from ``(seed, epoch, shard, index in shard)`` (and the caller's
states are given back after each batch, so the main process's RNGs are untouched when there are no
workers). A sample's augmentation therefore depends neither on which rank or worker reads it nor on what
was decoded before it, which is what makes a mid-epoch resume exact without replaying anything.

**Corrupt samples** (bad image bytes, missing ``cls``, truncated or unreadable tar) are skipped and counted
without sleeping (see :mod:`pipeline.data.shard_reading`). In training, a corrupt or missing sample at
position ``p`` of a slot's range is replaced by the sample at position ``p`` of a *spare* re-reading of the
same range in another seeded order (up to ``SPARE_TRIES`` spares; only if all are corrupt too does that batch
come out one short, and a batch left empty is an error). So every rank still yields its exact number of full
batches, and which sample fills position ``p`` depends only on ``p`` and the data, never on what happened
before it.

**Resume**: :meth:`ShardStream.set_epoch` takes the epoch and the batches of it already yielded. Worker ``w``
then plays role ``(w + batches) mod workers`` (the DataLoader's round robin restarts at worker 0) and skips
the raw samples of the batches its role already yielded *before* decoding them (the tars are read, nothing
is decoded or augmented). The resumed epoch then yields exactly the batches, samples, order and augmentation
draws of the uninterrupted one.

**Eval**: batch counts may differ by rank (the training module does no per-step collectives in eval), and
each rank's count is known from the manifest. A batch is ``(images, labels, skipped)``, ``skipped`` the
corrupt samples the worker dropped since its previous batch; eval batches are emitted one behind, so skips
after a worker's last sample ride on its last batch and the total is exact (only a worker whose every sample
is corrupt has no batch to carry its count; it is still logged).
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import webdataset as wds
from torch.utils.data import IterableDataset, default_collate

from pipeline.data.augment import AugmentationError
from pipeline.data.plans import Piece, eval_plan, mix, role_batches, train_plan, worker
from pipeline.data.shard_reading import SkipCounter, interleave, read_shard
from pipeline.errors import PipelineError

LoaderBatch = tuple[Any, ...]  # (images uint8[B,3,H,W], labels long[B], skipped long[]) [+ keys list[str]]
_Collated = tuple[torch.Tensor, torch.Tensor, list[str]]  # (images, labels, keys) before the skip count is added
OPEN_SHARDS = 4  # shard ranges a train slot reads at once (mixing across shards; each is an open tar stream)
SPARE_TRIES = 3  # spare re-readings tried for a corrupt train sample before its batch comes out one short


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


@dataclass
class _Spare:
    """One spare re-reading of a train slot's ranges, and how many of its samples have been read."""

    samples: Iterator[dict]
    read: int = 0


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

    def __iter__(self) -> Iterator[LoaderBatch]:
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

    def _train_batches(self, slot: int, role: int, workers: int, counter: SkipCounter) -> Iterator[LoaderBatch]:
        plan = train_plan(self.counts, self.world_size, workers, self.batch_size, self.seed, self.epoch)
        pieces, total = plan[slot], role_batches(self.train_batches(), workers)[role]
        done = len(range(role, self.start, workers))  # batches this role yielded before a resume
        main = self._pass(pieces, slot, (0,), counter)
        for _ in range(done * self.batch_size):  # skip what was consumed: tars are read, nothing is decoded
            next(main, None)
        spares: list[_Spare] = []  # opened when first needed
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

    def _spare_at(self, spares: list[_Spare], pieces: list[Piece], slot: int, t: int, p: int) -> dict:
        """The sample at position ``p`` of spare ``t`` (opening spares up to ``t`` as needed)."""
        while len(spares) < t:
            spares.append(_Spare(self._spare(pieces, slot, len(spares) + 1)))
        spare = spares[t - 1]
        while True:  # positions only grow, so each spare is read forward once
            sample = next(spare.samples)
            spare.read += 1
            if spare.read > p:
                return sample

    # --- shared --------------------------------------------------------------------------------------------
    def _decode_into(self, sample: dict, buf: list, keys: list[str], counter: SkipCounter) -> bool:
        """Decode one sample into ``buf`` (seeded per sample when it carries ``__seed__``); count a failure."""
        try:
            if "__seed__" in sample:
                seed_rngs(sample["__seed__"])
            buf.append(self.decode(sample))
        except AugmentationError:
            raise  # a bug in an augmentation op, not bad data: it stops the run (one line naming the op)
        except Exception as err:  # any failure to read or decode one sample makes it a corrupt sample
            counter.add(1, f"{sample.get('__key__')!r} from {sample.get('__url__')}: {type(err).__name__}: {err}")
            return False
        keys.append(sample["__key__"])
        return True

    def _eval_batches(self, samples: Iterator[dict], counter: SkipCounter) -> Iterator[LoaderBatch]:
        ready: _Collated | None = None
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

    def _collate(self, buf: list[tuple[torch.Tensor, int]], keys: list[str]) -> _Collated:
        images, labels = default_collate(buf)
        return images, labels, keys

    def _emit(self, ready: _Collated, counter: SkipCounter) -> LoaderBatch:
        images, labels, keys = ready
        return (images, labels, counter.take(), keys) if self.keys else (images, labels, counter.take())
