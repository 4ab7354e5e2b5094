"""Which samples each DataLoader worker of each rank reads: the pure planning math of the shard stream.

Every DataLoader worker of every rank is one *slot*: ``slot = role * world_size + rank`` of
``num_slots = workers * world_size`` (worker-major, so a few shards spread over ranks before workers), where
``workers = max(num_workers, 1)`` and ``role`` is the worker's id (rotated on a mid-epoch resume, see
:mod:`pipeline.data.stream`).

**Train** (exact epochs with equal batches on every rank: an iterable dataset that gives ranks uneven batch
counts hangs or kills DDP, an epoch length set on the dataset instead of the loader gets multiplied by the
number of workers, and ranks that shuffle with one shared seed read the same samples): the epoch is
``⌊N / (world_size · batch)⌋`` batches per rank. A DataLoader takes batch ``i`` of a rank from worker
``i mod workers``, so role ``r`` owes ``⌈(batches − r) / workers⌉`` batches. Each epoch, a seeded permutation
of the shards is concatenated into one sequence of all ``N`` samples; slot ``j`` gets the ``j``-th contiguous
range of it, exactly ``batch ×`` its batches long (the last ``N mod (world_size · batch)`` samples — fewer
than one global batch, a different tail each epoch — are the cut). So every sample the cut allows is read
exactly once per epoch across ranks × workers, for any number of shards versus slots (a shard may be split
over slots; each reads only its range).

**Eval** (exact, which neither webdataset nor timm's webdataset reader provides for distributed validation):
whole shards go round-robin to slots while a full round remains; each of the ``r`` leftover shards is read by
the slots ``j ≡ q (mod r)``, which keep every ``stride``-th sample at their own offset. Every sample is read
exactly once across ranks × workers; batch counts may differ by rank.
"""

from __future__ import annotations

import random

import numpy as np
from torch.utils.data import get_worker_info

Piece = tuple[int, int, int]  # (shard, first index, end index): samples first ≤ i < end of one shard
EvalRead = tuple[int, int, int]  # (shard, stride, offset): samples i of one shard with i % stride == offset


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


def eval_plan(num_shards: int, num_slots: int) -> list[list[EvalRead]]:
    """Per slot, the ``(shard, stride, offset)`` reads that cover every sample exactly once.

    A slot keeps sample ``i`` of a shard iff ``i % stride == offset``.
    """
    full = num_shards - num_shards % num_slots
    leftover = num_shards - full
    plan: list[list[EvalRead]] = []
    for j in range(num_slots):
        reads = [(i, 1, 0) for i in range(j, full, num_slots)]
        if leftover:
            q = j % leftover
            reads.append((full + q, len(range(q, num_slots, leftover)), j // leftover))
        plan.append(reads)
    return plan
