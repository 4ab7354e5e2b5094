"""``ShardLoader``: the DataLoader over a :class:`~pipeline.data.stream.ShardStream` — exact length, mid-epoch
resume, throughput.

**Resume**: Lightning restores its loop counters but not an iterable's position unless the loader has
``state_dict`` / ``load_state_dict`` (otherwise it warns that the dataloader is not resumable, and a requeued
epoch replays its first batches and skips its last). :class:`ShardLoader` has both, and Lightning saves and
restores them with the fit loop: the state is ``(epoch, batches already yielded)``, which the loader hands to
the stream (:meth:`~pipeline.data.stream.ShardStream.set_epoch`) before its workers start, so the resumed
epoch yields exactly the batches of the uninterrupted one.

**Throughput**: when an epoch's last batch is fetched the loader logs images/s, the time spent waiting for
data and the corrupt samples skipped (one INFO line per rank), and keeps those numbers in ``last_epoch``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator

import torch
from torch.utils.data import DataLoader

from pipeline.data.stream import LoaderBatch, ShardStream

log = logging.getLogger(__name__)


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

    def __iter__(self) -> Iterator[LoaderBatch]:  # type: ignore[override]
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

    def _timed(self, batches: Iterator[LoaderBatch], epoch: int, start: int) -> Iterator[LoaderBatch]:
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
