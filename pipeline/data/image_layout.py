"""A uint8 image tensor ``[C, H, W]`` in either memory layout, for the augmentation ops.

The fast transform's crops come out of ``interpolate`` as channel planes (contiguous) or as height × width ×
channels (channels-last strides), depending on the resize; OpenCV works in, and returns, the latter. Every op
takes either layout and returns either: converting once where an op needs the other is cheaper than
normalising every image (``cv2.merge`` / ``cv2.split`` convert ~15× faster than a transposing copy), and the
transform hands the loader contiguous planes (:func:`channel_planes`).
"""

from __future__ import annotations

import cv2
import numpy as np
import torch

cv2.setNumThreads(0)  # one sample per call inside loader workers (the parallelism): no thread pool per worker


def hwc(img: torch.Tensor) -> np.ndarray:
    """A uint8 ``[C, H, W]`` tensor's pixels as an ``[H, W, C]`` array (a view when its memory is channels-last;
    from channel planes ``cv2.merge``, ~15× faster than torch's or numpy's transposing copy)."""
    view = img.permute(1, 2, 0)
    if view.is_contiguous():
        return view.numpy()
    return cv2.merge(list(img.contiguous().numpy())).reshape(view.shape)


def channel_planes(img: torch.Tensor) -> torch.Tensor:
    """``img`` with contiguous ``[C, H, W]`` memory (a channels-last one split by ``cv2.split``, ~4× faster
    than the transposing copy ``torch.stack`` would make of it)."""
    if img.is_contiguous():
        return img
    return torch.from_numpy(np.stack(cv2.split(hwc(img))))


def from_hwc(array: np.ndarray) -> torch.Tensor:
    """An ``[H, W, C]`` array as a ``[C, H, W]`` tensor with channels-last strides (no copy)."""
    return torch.from_numpy(array.reshape(array.shape[0], array.shape[1], -1)).permute(2, 0, 1)


def planes(img: torch.Tensor) -> np.ndarray | None:
    """``img``'s pixels as ``[C, H, W]`` planes when its memory is laid out so (no copy), else None."""
    return img.numpy() if img.is_contiguous() else None


def to_uint8(x: torch.Tensor) -> torch.Tensor:
    """Float in 0…255 → uint8, truncated (through int16: ~2× faster than a direct float → uint8 cast)."""
    return x.to(torch.int16).to(torch.uint8)
