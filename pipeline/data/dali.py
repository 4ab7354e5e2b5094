"""Optional NVIDIA DALI backend (``data.backend: dali``): the same shards decoded on the GPU (nvJPEG).

A DALI pipeline per rank reads the split's shards with ``fn.readers.webdataset`` (``shard_id`` = rank: each
rank reads a disjoint contiguous share of the samples), decodes and crops with
``fn.decoders.image_random_crop`` (train: only the RandomResizedCrop region is decoded; scale and aspect
range as timm's) or ``fn.decoders.image`` + shorter-side resize + center crop (eval, as timm's), resizes
antialiased with ``data.interpolation``, applies the recipe's AutoAugment or jitters brightness / contrast /
saturation, flips, and emits uint8 ``[B, 3, H, W]`` —
the CPU path's batch contract ``(images, labels, skipped)``, normalised by the datamodule on the device.
On a GPU the decoder runs with ``device="mixed"`` (nvJPEG, outputs on the GPU); without one every op runs on
the CPU, which is how CI tests this mechanism.

Train: exactly ``⌊N / (world_size · batch)⌋`` batches per rank (the reader continues into the next epoch's
order rather than run short). Eval: exact, every sample once across ranks, last batch partial (DALI's
``LastBatchPolicy.PARTIAL`` with the reader's shard size). The colour jitter is the same kind as timm's
(factors uniform in [1 − j, 1 + j]) in a fixed order rather than a random one; corrupt samples stop the
epoch with DALI's error instead of being skipped (``skipped`` is always 0).

Augmentation (:func:`dali_augment` maps the config; anything without a DALI equivalent is refused in one line):
timm's ``v0`` (the EfficientNet recipe's AutoAugment, Google's ``policy_v0``) is DALI's ``image_net`` policy of
``nvidia.dali.auto_aug`` — the same 25 sub-policies, probabilities and magnitude bins (DALI drops timm's two
probability-0 ops) — with timm's magnitudes where DALI's differ: posterize keeps ``int(4·bin/10)`` bits, 0 bits a
black image (TF's semantics; DALI's own maps 0 bits to 1), solarize thresholds truncated to ``int(25.6·bin)``
(DALI's own compares with the float), translation ``0.45 × side`` (timm's ``translate_pct``). Pixels against
:mod:`pipeline.data.augment`'s ops (Pillow's), DALI 2.4 on the CPU, a 224² photo: Posterize, Solarize, SolarizeAdd,
Invert, AutoContrast exact; Equalize (OpenCV's look-up table) mean absolute difference 0.99 grey levels, at most 5;
Color (DALI's saturation) 0.37–0.53, at most 2; Rotate / ShearX with the same bilinear filter and fill 0.15 / 0.10.
The warps (rotate, shear, translate) are always bilinear with grey 128 fill (TF's reference) where timm picks
bilinear or bicubic per op and fills with the ImageNet mean. The flip comes after the policy (timm's before it): the
policy's warps draw their sign at random, so the distribution is the same.
``original`` / ``originalr`` / ``v0r``, any ``mstd`` magnitude noise and timm's RandAugment (each layer applied with
probability 0.5, magnitudes on timm's 0–10 scale, ``inc1`` ops) have no DALI equivalent. The policy runs on the
CPU too (DALI ≥ 2: how CI tests it).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from pipeline.errors import PipelineError

CLS_BYTES = 20  # labels are stored as ASCII decimal text; padded to this many bytes to batch them
MISSING = "data.backend: dali needs NVIDIA DALI, which is not installed: pip install nvidia-dali-cuda130"
INTERPOLATIONS = {"bicubic": "INTERP_CUBIC", "bilinear": "INTERP_LINEAR", "nearest": "INTERP_NN",
                  "lanczos": "INTERP_LANCZOS3"}  # timm's name → nvidia.dali.types attribute
POLICIES = {"v0": "image_net"}  # timm's AutoAugment name → DALI's predefined policy (see the module docstring)
TRANSLATE_PCT = 0.45  # timm's default translate_pct: v0's TranslateYRel shifts up to 45 % of the side


@dataclass(frozen=True)
class DaliAugment:
    """What the DALI pipeline applies: timm's ``policy`` (None: colour jitter) and the resize ``interp_type``."""

    policy: str | None
    interp_type: str

    def record(self) -> str | None:
        """The policy as the run records it (None: no policy)."""
        if self.policy is None:
            return None
        return f"{self.policy} (DALI auto_aug {POLICIES[self.policy]} policy, timm's magnitudes)"


def dali_augment(auto_augment: str | None, interpolation: str) -> DaliAugment:
    """The DALI equivalent of timm's ``auto_augment`` and ``interpolation``; PipelineError (one line) without one."""
    if interpolation not in INTERPOLATIONS:
        raise PipelineError(f"data.backend: dali has no interpolation {interpolation!r}; use one of "
                            f"{', '.join(INTERPOLATIONS)} or data.backend: pil")
    if auto_augment and auto_augment not in POLICIES:
        raise PipelineError(f"data.auto_augment {auto_augment!r} has no DALI equivalent (DALI runs timm's "
                            f"{', '.join(POLICIES)} only); use data.backend: pil, or data.auto_augment: v0")
    return DaliAugment(auto_augment or None, INTERPOLATIONS[interpolation])


def tf_posterize_mask(magnitude: float) -> np.ndarray:
    """DALI posterize parameter: the uint8 mask keeping ``int(magnitude)`` high bits (0 bits: black, TF's)."""
    bits = min(int(magnitude + 1e-6), 8)  # DALI's magnitudes come from a linspace: 0.4·k may fall just short
    return np.array((0xFF << (8 - bits)) & 0xFF, dtype=np.uint8)


def tf_solarize_threshold(magnitude: float) -> np.ndarray:
    """DALI solarize parameter: values ≥ ``int(magnitude)`` are inverted (timm's integer threshold)."""
    return np.array(int(magnitude + 1e-6), dtype=np.float32)


def v0_policy(resolution: int) -> Any:
    """timm's ``v0`` as a DALI ``Policy``: DALI's ``image_net`` policy with timm's posterize, solarize and
    translation magnitudes at ``resolution``."""
    from nvidia.dali.auto_aug import augmentations
    from nvidia.dali.auto_aug.auto_augment import get_image_net_policy
    from nvidia.dali.auto_aug.core import Policy

    net = get_image_net_policy(max_translate_abs=TRANSLATE_PCT * resolution)
    ours = {"posterize": augmentations.posterize.augmentation(mag_to_param=tf_posterize_mask),
            "solarize": augmentations.solarize.augmentation(mag_range=(0, 256), mag_to_param=tf_solarize_threshold)}
    return Policy("timm v0", net.num_magnitude_bins,
                  [[(ours.get(aug.name, aug), p, m) for aug, p, m in sub] for sub in net.sub_policies])


def require_dali() -> None:
    """PipelineError (one line) unless ``nvidia.dali`` imports."""
    try:
        import nvidia.dali  # noqa: F401
    except ImportError as err:
        raise PipelineError(MISSING) from err


def build_pipeline(urls: list[str], *, train: bool, resolution: int, batch_size: int, rank: int, world_size: int,
                   seed: int, shuffle_buffer: int, crop_pct: float, scale: tuple[float, float], hflip: float,
                   color_jitter: float | None, augment: DaliAugment, device_id: int | None, num_threads: int) -> Any:
    """The DALI pipeline of one rank (built, not started); outputs ``images`` (uint8 CHW) and ``labels``."""
    from nvidia.dali import fn, pipeline_def, types
    from nvidia.dali.auto_aug.auto_augment import apply_auto_augment

    decoder = "mixed" if device_id is not None else "cpu"
    interp = getattr(types, augment.interp_type)

    @pipeline_def(batch_size=batch_size, num_threads=num_threads, device_id=device_id, seed=seed,
                  exec_dynamic=True, enable_conditionals=True)  # auto_aug selects ops with `if`
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
            images = fn.resize(images, resize_x=resolution, resize_y=resolution, interp_type=interp, antialias=True)
            if augment.policy is not None:  # timm applies no colour jitter with AutoAugment either
                images = apply_auto_augment(v0_policy(resolution), images, seed=seed, fill_value=128,
                                            interp_type=types.INTERP_LINEAR)
            elif color_jitter:
                lo, hi = 1 - color_jitter, 1 + color_jitter
                images = fn.brightness_contrast(images, brightness=fn.random.uniform(range=[lo, hi]),
                                                contrast=fn.random.uniform(range=[lo, hi]))
                images = fn.hsv(images, saturation=fn.random.uniform(range=[lo, hi]))
            mirror = fn.random.coin_flip(probability=hflip)
        else:
            images = fn.decoders.image(jpegs, device=decoder, output_type=types.RGB)
            images = fn.resize(images, resize_shorter=math.floor(resolution / crop_pct), interp_type=interp,
                               antialias=True)
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
                 color_jitter: float | None = 0.4, augment: DaliAugment = DaliAugment(None, "INTERP_CUBIC"),
                 num_threads: int = 4) -> None:
        require_dali()
        from nvidia.dali.plugin.pytorch import DALIGenericIterator, LastBatchPolicy

        device_id = torch.cuda.current_device() if torch.cuda.is_available() else None
        self.pipe = build_pipeline(
            urls, train=train, resolution=resolution, batch_size=batch_size, rank=rank, world_size=world_size,
            seed=seed, shuffle_buffer=shuffle_buffer, crop_pct=crop_pct, scale=scale, hflip=hflip,
            color_jitter=color_jitter, augment=augment, device_id=device_id, num_threads=num_threads,
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
