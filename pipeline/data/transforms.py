"""timm's image transforms, and the fast sample decoder that applies them to shard samples.

Train: RandomResizedCrop + horizontal flip + optional AutoAugment / RandAugment (timm strings such as
``"original"`` or ``"rand-m9-mstd0.5"``; colour jitter otherwise), eval: resize the shorter side to
``resolution / crop_pct`` then center-crop ``resolution``; normalised with the ImageNet mean/std that timm's
pretrained weights expect. :func:`build_transform` is timm's ``create_transform`` itself (PIL in, float
tensor out): the reference the fast path is measured and tested against.

:func:`fast_transform` gives the same augmentation from encoded bytes to a **uint8** ``[3, H, W]`` tensor, as
timm's prefetcher path does (``create_transform(use_prefetcher=True)``): :func:`normalize_images` turns the
collated batch into normalised floats on the device. Per sample it

1. reads the image size from the header (nothing decoded yet) and picks the box: timm's own
   ``RandomResizedCropAndInterpolation.get_params`` (train) or the center crop of the eval resize;
2. decodes a JPEG at the smallest DCT scale (1, 1/2, 1/4, 1/8, PIL ``draft``) that keeps the box at least
   the output size, so no pixel is upsampled that a full decode would have had (an RGB JPEG at full scale:
   TorchCodec's ``decode_jpeg``, the same pixels straight into a tensor);
3. crops and resizes in one antialiased ``torch.nn.functional.interpolate`` on uint8 (bilinear / bicubic:
   PIL's filters, ~4× faster than PIL's resize here); other interpolations use PIL's ``resize(box=…)``;
4. applies timm's flip and colour jitter, or timm's AutoAugment / RandAugment policy with tensor ops
   (:mod:`pipeline.data.augment`), to the tensor (other policies, e.g. AugMix, on a PIL view of it).

The randomness comes from the same generators as timm's transforms (``random`` for the crop box and the
policy's draws, numpy's for RandAugment's op choice, torch's for flip and jitter), so seeding them around a
call seeds the augmentation.
"""

from __future__ import annotations

import io
import math
import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import ExifTags, Image
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD, create_transform
from timm.data.transforms import RandomResizedCropAndInterpolation
from torchcodec.decoders import decode_jpeg
from torchvision.transforms import ColorJitter, Compose, InterpolationMode

from pipeline.data.augment import tensor_policy
from pipeline.data.image_layout import channel_planes

IMAGE_EXTS = ("jpg", "jpeg", "png")
TORCH_MODES = ("bilinear", "bicubic")  # antialiased uint8 interpolate; PIL's filters (a = -0.5 for bicubic)
_PIL_FILTERS = {m.value: getattr(Image.Resampling, m.name) for m in InterpolationMode
                if hasattr(Image.Resampling, m.name)}
Box = tuple[float, float, float, float]  # left, top, width, height in source pixels
_GREY_WEIGHTS = torch.tensor([0.2989, 0.587, 0.114]).view(3, 1, 1)  # torchvision's rgb_to_grayscale


def _timm_kwargs(train: bool, auto_augment: str | None, crop_pct: float, interpolation: str,
                 scale: tuple[float, float], hflip: float, color_jitter: float | None) -> dict[str, Any]:
    if train:
        return {"is_training": True, "auto_augment": auto_augment, "interpolation": interpolation,
                "scale": tuple(scale), "hflip": hflip, "color_jitter": color_jitter or 0.0}
    return {"is_training": False, "crop_pct": crop_pct, "interpolation": interpolation}


def build_transform(
    resolution: int,
    *,
    train: bool,
    auto_augment: str | None = None,
    crop_pct: float = 0.875,
    interpolation: str = "bicubic",
    scale: tuple[float, float] = (0.08, 1.0),
    hflip: float = 0.5,
    color_jitter: float | None = 0.4,
) -> Callable[[Image.Image], torch.Tensor]:
    """timm's transform for ``resolution`` (train: random crop + flip + augment; eval: resize + center crop)."""
    return create_transform(
        resolution, **_timm_kwargs(train, auto_augment, crop_pct, interpolation, scale, hflip, color_jitter)
    )


def decode_side(resolution: int, crop_pct: float) -> int:
    """Shorter side of timm's eval resize before the center crop: ``floor(resolution / crop_pct)``."""
    return math.floor(resolution / crop_pct)


def eval_geometry(size: tuple[int, int], resolution: int, crop_pct: float) -> tuple[int, int, int, int]:
    """timm's eval transform as numbers: ``(resized w, resized h, crop left, crop top)``.

    Same integer arithmetic as torchvision's ``Resize(int)`` (shorter side to ``decode_side``) and ``CenterCrop``.
    """
    w, h = size
    short = decode_side(resolution, crop_pct)
    rw, rh = (short, int(short * h / w)) if w <= h else (int(short * w / h), short)
    return rw, rh, round((rw - resolution) / 2.0), round((rh - resolution) / 2.0)


def load_rgb(img: Image.Image, data: bytes, box: Box, out: tuple[int, int]) -> tuple[Image.Image | torch.Tensor, Box]:
    """Decode ``img`` (lazily opened from ``data``), a JPEG at the smallest DCT scale keeping ``box`` ≥ ``out``.

    Returns the RGB image and ``box`` in its pixels. PIL's ``draft`` picks the largest 1/2^k reduction whose
    result is at least the requested size; requesting ``size · out / box`` keeps the scaled box ≥ ``out``. An
    upright RGB JPEG that no reduction fits is decoded by TorchCodec's ``decode_jpeg`` instead, to an HWC uint8
    tensor: a libjpeg-turbo decode of the same pixels, without PIL's image object and its copy to an array.
    Like PIL (and timm's folder readers), neither path applies an EXIF orientation.
    """
    w, h = img.size
    left, top, bw, bh = box
    if img.format == "JPEG":
        img.draft("RGB", (math.ceil(w * out[0] / max(bw, 1e-9)), math.ceil(h * out[1] / max(bh, 1e-9))))
        if img.size == (w, h) and img.mode == "RGB" and _upright(img):
            return decode_jpeg(data).permute(1, 2, 0), box  # decode_jpeg's CHW is a view of HWC memory
    img.load()
    rgb = img if img.mode == "RGB" else img.convert("RGB")  # grayscale / palette / CMYK → RGB (RGB: no copy)
    sx, sy = rgb.width / w, rgb.height / h
    return rgb, (left * sx, top * sy, bw * sx, bh * sy)


def _upright(img: Image.Image) -> bool:
    """Whether ``img`` has no EXIF orientation to apply (TorchCodec applies one; PIL and timm do not)."""
    return "exif" not in img.info or img.getexif().get(ExifTags.Base.Orientation, 1) == 1


def _size(img: Image.Image | torch.Tensor) -> tuple[int, int]:
    """(width, height) of a PIL image or an HWC tensor."""
    return img.size if isinstance(img, Image.Image) else (img.shape[1], img.shape[0])


def crop_resize(img: Image.Image | torch.Tensor, box: Box, out: tuple[int, int], mode: str) -> torch.Tensor:
    """``box`` of ``img`` (PIL RGB or HWC uint8) resized to ``out`` (w, h) as uint8 ``[3, h, w]``, antialiased.

    The result keeps the memory layout ``interpolate`` returns (channel planes, or h × w × 3 for some sizes):
    the augmentation ops take either, and :class:`FastTransform` hands the loader contiguous planes.
    """
    left, top, bw, bh = box
    if mode not in TORCH_MODES:
        pil = img if isinstance(img, Image.Image) else Image.fromarray(img.numpy())
        resized = pil.resize(out, _PIL_FILTERS[mode], box=(left, top, left + bw, top + bh))
        return torch.from_numpy(np.array(resized)).permute(2, 0, 1)
    # torch resizes whole pixels: round the box (exact without a DCT reduction, ≤ ½ px of it otherwise)
    x0, y0 = round(left), round(top)
    x1, y1 = max(round(left + bw), x0 + 1), max(round(top + bh), y0 + 1)
    if isinstance(img, Image.Image):  # only the box's pixels become an array (writable: torch refuses read-only)
        hwc = torch.from_numpy(np.array(img.crop((x0, y0, x1, y1))))
    else:
        hwc = img[y0:y1, x0:x1].contiguous()
    crop = hwc.permute(2, 0, 1).unsqueeze(0)  # channels-last strides: the fast uint8 kernel
    return F.interpolate(crop, size=(out[1], out[0]), mode=mode, antialias=True)[0]


@dataclass(frozen=True)
class Uint8ColorJitter:
    """torchvision's ``ColorJitter`` (brightness, contrast, saturation) on a uint8 ``[3, H, W]`` tensor, fused.

    Same random draws (``ColorJitter.get_params``: factors and order) and the same arithmetic as torchvision's
    tensor path (each step blends in float, clamps and truncates to uint8; grey = truncated 0.2989 R + 0.587 G
    + 0.114 B), in one float buffer with in-place ops: torchvision's version costs ~3× more on a 224² image
    (per-op overhead and uint8↔float round trips), the largest share of a sample's time after the decode.
    """

    jitter: ColorJitter

    @staticmethod
    def _grey(x: torch.Tensor) -> torch.Tensor:
        # the three products in one op, summed in torchvision's order (float32 weights: the same roundings)
        p = x * _GREY_WEIGHTS
        return p[0].add_(p[1]).add_(p[2]).floor_()

    def __call__(self, img: torch.Tensor) -> torch.Tensor:
        """Jitter one image (uint8 in, uint8 out)."""
        j = self.jitter
        order, brightness, contrast, saturation, _ = j.get_params(j.brightness, j.contrast, j.saturation, None)
        x = img.float()
        for op in order:
            if op == 0 and brightness is not None:
                x.mul_(brightness)
            elif op == 1 and contrast is not None:
                mean = self._grey(x).mean()  # before scaling x in place
                x.mul_(contrast).add_((1.0 - contrast) * mean)
            elif op == 2 and saturation is not None:
                grey = self._grey(x)
                x.mul_(saturation).add_(grey.mul_(1.0 - saturation))
            else:
                continue
            x.clamp_(0, 255).floor_()
        return x.to(torch.int16).to(torch.uint8)  # exact (whole numbers in 0…255), ~3× faster than direct


@dataclass(frozen=True)
class FastTransform:
    """Encoded image bytes → augmented uint8 ``[3, resolution, resolution]`` (see the module docstring).

    ``crop`` is timm's RandomResizedCrop (train) or None (eval: :func:`eval_geometry`); ``tensor_ops`` run on the
    uint8 tensor (timm's flip, colour jitter or AutoAugment / RandAugment); ``pil_ops`` (AugMix) on a PIL view.
    """

    resolution: int
    crop: RandomResizedCropAndInterpolation | None
    crop_pct: float
    interpolation: str
    tensor_ops: Callable[[torch.Tensor], torch.Tensor] | None = None
    pil_ops: Callable[[Image.Image], Image.Image] | None = None

    def __call__(self, data: bytes) -> torch.Tensor:
        """Decode, crop, resize and augment one encoded image."""
        img = Image.open(io.BytesIO(data))
        mode = self.interpolation
        out = (self.resolution, self.resolution)
        if self.crop is None:  # resize the whole image as timm does (exact geometry), then crop
            rw, rh, left, top = eval_geometry(img.size, self.resolution, self.crop_pct)
            sx, sy = img.width / rw, img.height / rh
            rgb, _ = load_rgb(img, data, (left * sx, top * sy, self.resolution * sx, self.resolution * sy), out)
            x = crop_resize(rgb, (0, 0, *_size(rgb)), (rw, rh), mode)
            return x[:, top:top + self.resolution, left:left + self.resolution].contiguous()
        top, left, bh, bw = self.crop.get_params(img, self.crop.scale, self.crop.ratio)  # reads img.size only
        if isinstance(self.crop.interpolation, (tuple, list)):  # timm's "random": one of bilinear / bicubic
            mode = random.choice(self.crop.interpolation).value
        rgb, box = load_rgb(img, data, (left, top, bw, bh), out)
        x = crop_resize(rgb, box, out, mode)
        if self.tensor_ops is not None:
            x = self.tensor_ops(x)
        if self.pil_ops is not None:
            x = torch.from_numpy(np.array(self.pil_ops(Image.fromarray(x.permute(1, 2, 0).numpy())))).permute(2, 0, 1)
        return channel_planes(x)


def fast_transform(
    resolution: int,
    *,
    train: bool,
    auto_augment: str | None = None,
    crop_pct: float = 0.875,
    interpolation: str = "bicubic",
    scale: tuple[float, float] = (0.08, 1.0),
    hflip: float = 0.5,
    color_jitter: float | None = 0.4,
) -> FastTransform:
    """The :class:`FastTransform` equal to ``build_transform`` with the same arguments (uint8, unnormalised).

    Built from timm's own transform objects (``create_transform(separate=True, use_prefetcher=True)``).
    """
    kwargs = _timm_kwargs(train, auto_augment, crop_pct, interpolation, scale, hflip, color_jitter)
    if not train:
        return FastTransform(resolution, None, crop_pct, interpolation)
    primary, secondary, _ = create_transform(resolution, separate=True, use_prefetcher=True, **kwargs)
    crop, *flips = primary.transforms
    tensor_ops = list(flips)
    pil_ops = []
    for t in secondary.transforms:  # colour jitter and AutoAugment / RandAugment on tensors; AugMix needs PIL
        on_tensor = None if pil_ops else tensor_policy(t)
        if isinstance(t, ColorJitter) and t.hue is None and not pil_ops:
            on_tensor = Uint8ColorJitter(t)
        elif on_tensor is None and (pil_ops or "Augment" in type(t).__name__):
            pil_ops.append(t)
            continue
        tensor_ops.append(on_tensor or t)
    return FastTransform(
        resolution, crop, crop_pct, interpolation,
        Compose(tensor_ops) if tensor_ops else None, Compose(pil_ops) if pil_ops else None,
    )


def normalize_images(images: torch.Tensor) -> torch.Tensor:
    """uint8 ``[B, 3, H, W]`` → float, normalised with ImageNet mean/std on ``images``' device (floats pass).

    What timm's ``PrefetchLoader`` does after the host-to-device copy; hand-written here because that class
    wraps a whole ``(input, target)`` loader, and our batches carry a third field (the skipped count).
    """
    if images.dtype != torch.uint8:
        return images
    mean = torch.tensor(IMAGENET_DEFAULT_MEAN, device=images.device).mul_(255).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_DEFAULT_STD, device=images.device).mul_(255).view(1, 3, 1, 1)
    return images.float().mul_(1 / std).add_(-mean / std)  # (x − m) / s as one multiply-add: 1.6× cheaper


@dataclass(frozen=True)
class SampleDecoder:
    """Turns a webdataset sample dict (``jpg``/``png`` bytes, ``cls``) into ``(uint8 image tensor, label)``.

    Raises on a corrupt sample (undecodable image, missing or non-integer ``cls``, no image); the stream
    counts those and skips them.
    """

    transform: Callable[[bytes], torch.Tensor]

    def __call__(self, sample: dict[str, Any]) -> tuple[torch.Tensor, int]:
        """Decode and transform one sample."""
        if "cls" not in sample:
            raise KeyError(f"sample {sample.get('__key__')!r} has no cls")
        label = int(sample["cls"])
        ext = next((e for e in IMAGE_EXTS if e in sample), None)
        if ext is None:
            raise KeyError(f"sample {sample.get('__key__')!r} has no image ({'/'.join(IMAGE_EXTS)})")
        return self.transform(sample[ext]), label
