"""Optional NVIDIA DALI backend (``data.backend: dali``): the same shards decoded on the GPU (nvJPEG).

A DALI pipeline per rank reads the split's shards with ``fn.readers.webdataset`` (``shard_id`` = rank: each
rank reads a disjoint contiguous share of the samples), decodes and crops with
``fn.decoders.image_random_crop`` (train: only the RandomResizedCrop region is decoded; scale and aspect
range as timm's) or ``fn.decoders.image`` + shorter-side resize + center crop (eval, as timm's), resizes
antialiased bicubic, flips, jitters brightness / contrast / saturation, and emits uint8 ``[B, 3, H, W]`` —
the CPU path's batch contract ``(images, labels, skipped)``, normalised by the datamodule on the device.
On a GPU the decoder runs with ``device="mixed"`` (nvJPEG, outputs on the GPU); without one every op runs on
the CPU, which is how CI tests this mechanism.

Train: exactly ``⌊N / (world_size · batch)⌋`` batches per rank (the reader continues into the next epoch's
order rather than run short). Eval: exact, every sample once across ranks, last batch partial (DALI's
``LastBatchPolicy.PARTIAL`` with the reader's shard size). The colour jitter is the same kind as timm's
(factors uniform in [1 − j, 1 + j]) in a fixed order rather than a random one; corrupt samples stop the
epoch with DALI's error instead of being skipped (``skipped`` is always 0).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

import torch

from pipeline.errors import PipelineError

CLS_BYTES = 20  # labels are stored as ASCII decimal text; padded to this many bytes to batch them
MISSING = "data.backend: dali needs NVIDIA DALI, which is not installed: pip install nvidia-dali-cuda130"


def require_dali() -> None:
    """PipelineError (one line) unless ``nvidia.dali`` imports."""
    try:
        import nvidia.dali  # noqa: F401
    except ImportError as err:
        raise PipelineError(MISSING) from err


def build_pipeline(urls: list[str], *, train: bool, resolution: int, batch_size: int, rank: int, world_size: int,
                   seed: int, shuffle_buffer: int, crop_pct: float, scale: tuple[float, float], hflip: float,
                   color_jitter: float | None, device_id: int | None, num_threads: int) -> Any:
    """The DALI pipeline of one rank (built, not started); outputs ``images`` (uint8 CHW) and ``labels``."""
    from nvidia.dali import fn, pipeline_def, types

    decoder = "mixed" if device_id is not None else "cpu"

    @pipeline_def(batch_size=batch_size, num_threads=num_threads, device_id=device_id, seed=seed,
                  exec_dynamic=True)
    def pipe() -> tuple[Any, Any]:
        jpegs, cls = fn.readers.webdataset(
            paths=urls, ext=["jpg;jpeg;png", "cls"], missing_component_behavior="error", name="reader",
            shard_id=rank, num_shards=world_size, random_shuffle=train, initial_fill=shuffle_buffer,
            pad_last_batch=not train,
        )
        if train:
            images = fn.decoders.image_random_crop(
                jpegs, device=decoder, output_type=types.RGB, random_area=list(scale),
                random_aspect_ratio=[3 / 4, 4 / 3], num_attempts=10,
            )
            images = fn.resize(images, resize_x=resolution, resize_y=resolution, interp_type=types.INTERP_CUBIC,
                               antialias=True)
            if color_jitter:
                lo, hi = 1 - color_jitter, 1 + color_jitter
                images = fn.brightness_contrast(images, brightness=fn.random.uniform(range=[lo, hi]),
                                                contrast=fn.random.uniform(range=[lo, hi]))
                images = fn.hsv(images, saturation=fn.random.uniform(range=[lo, hi]))
            mirror = fn.random.coin_flip(probability=hflip)
        else:
            images = fn.decoders.image(jpegs, device=decoder, output_type=types.RGB)
            images = fn.resize(images, resize_shorter=math.floor(resolution / crop_pct),
                               interp_type=types.INTERP_CUBIC, antialias=True)
            mirror = 0
        images = fn.crop_mirror_normalize(images, dtype=types.UINT8, output_layout="CHW", crop=(resolution,) * 2,
                                          mean=[0.0], std=[1.0], mirror=mirror)
        labels = fn.pad(cls, fill_value=0, shape=[CLS_BYTES])
        return images, labels

    return pipe()


def parse_labels(padded: torch.Tensor) -> torch.Tensor:
    """ASCII decimal labels, zero-padded rows of bytes → long ``[B]``."""
    digits = padded.to("cpu", torch.long)
    return torch.tensor([int(bytes(row[row > 0].to(torch.uint8).tolist())) for row in digits], dtype=torch.long)


class DaliLoader:
    """``(images uint8 [B,3,H,W], labels long [B], skipped long [])`` batches of one rank from a DALI pipeline.

    ``len()`` is the epoch length: train ``⌊count / (world_size · batch)⌋``, eval this rank's exact count.
    """

    def __init__(self, urls: list[str], count: int, *, train: bool, resolution: int, batch_size: int,
                 rank: int = 0, world_size: int = 1, seed: int = 0, shuffle_buffer: int = 1000,
                 crop_pct: float = 0.875, scale: tuple[float, float] = (0.08, 1.0), hflip: float = 0.5,
                 color_jitter: float | None = 0.4, num_threads: int = 4) -> None:
        require_dali()
        from nvidia.dali.plugin.pytorch import DALIGenericIterator, LastBatchPolicy

        device_id = torch.cuda.current_device() if torch.cuda.is_available() else None
        self.pipe = build_pipeline(
            urls, train=train, resolution=resolution, batch_size=batch_size, rank=rank, world_size=world_size,
            seed=seed, shuffle_buffer=shuffle_buffer, crop_pct=crop_pct, scale=scale, hflip=hflip,
            color_jitter=color_jitter, device_id=device_id, num_threads=num_threads,
        )
        self.train, self.batch_size, self.rank, self.world_size = train, batch_size, rank, world_size
        self.iterator = DALIGenericIterator(
            self.pipe, ["images", "labels"], reader_name="reader", auto_reset=True,
            last_batch_policy=LastBatchPolicy.DROP if train else LastBatchPolicy.PARTIAL,
        )
        # DALI gives shard i of n the samples [⌊N·i/n⌋, ⌊N·(i+1)/n⌋)
        rank_count = count * (rank + 1) // world_size - count * rank // world_size
        self.num_batches = count // (world_size * batch_size) if train else -(-rank_count // batch_size)
        if self.num_batches == 0:
            raise PipelineError(f"{count} samples leave rank {rank} of {world_size} without a batch of {batch_size}")

    def __len__(self) -> int:
        return self.num_batches

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        produced = 0
        while produced < self.num_batches:
            for out in self.iterator:
                batch = out[0]
                yield batch["images"], parse_labels(batch["labels"]), torch.tensor(0, dtype=torch.long)
                produced += 1
                if produced == self.num_batches:
                    if not self.train:  # drain so the next epoch starts at the shard's beginning
                        for _ in self.iterator:
                            pass
                    break
