"""AutoAugment / RandAugment on uint8 tensors against timm's PIL ops, policies and random draws."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from sklearn.datasets import load_sample_images
from timm.data import create_transform
from timm.data.auto_augment import NAME_TO_OP, auto_augment_transform, rand_augment_transform

from pipeline.data.augment import TENSOR_OPS, AugmentationError, TensorOp, policy_ops, reference_policy, tensor_policy
from pipeline.data.datamodule import ShardDataModule
from pipeline.data.image_layout import channel_planes
from pipeline.data.sharding import write_shards
from pipeline.data.sources import get_source
from pipeline.data.transforms import fast_transform
from tests.data.test_transforms import photo_jpeg

HPARAMS = {"translate_const": 100, "img_mean": (124, 116, 104), "interpolation": Image.Resampling.BICUBIC}
KWARGS = {"fillcolor": HPARAMS["img_mean"], "resample": HPARAMS["interpolation"]}
EXACT = [("AutoContrast", ()), ("Equalize", ()), ("Invert", ()), ("Posterize", (1,)), ("Posterize", (3,)),
         ("Posterize", (8,)), ("Solarize", (100,)), ("Solarize", (256,)), ("SolarizeAdd", (60,)),
         ("Color", (1.7,)), ("Color", (0.3,)), ("Contrast", (1.6,)), ("Contrast", (0.4,)), ("Brightness", (1.8,)),
         ("Brightness", (0.3,)), ("Sharpness", (1.9,)), ("Sharpness", (0.2,))]
LINE_SHIFTS = [("ShearX", (0.25,)), ("ShearX", (-0.13,)), ("ShearY", (-0.2,)), ("ShearY", (0.3,)),
               ("TranslateXRel", (0.3,)), ("TranslateYRel", (-0.4,)), ("TranslateX", (37.3,)),
               ("TranslateX", (-120.6,)), ("TranslateY", (-5.0,)), ("TranslateY", (250.0,))]
ROTATIONS = [("Rotate", (25.0,)), ("Rotate", (-10.0,)), ("Rotate", (3.3,))]
FILTERS = [Image.Resampling.BICUBIC, Image.Resampling.BILINEAR]


def photos() -> list[Image.Image]:
    """Two real photos: a 224² resize and an odd-sized crop (200×180)."""
    a, b = (Image.fromarray(p) for p in load_sample_images().images)
    return [a.resize((224, 224), Image.Resampling.BICUBIC),
            b.crop((100, 50, 340, 250)).resize((200, 180), Image.Resampling.BICUBIC)]


def chw(img: Image.Image) -> torch.Tensor:
    """A PIL RGB image as uint8 ``[3, H, W]``."""
    return torch.from_numpy(np.array(img)).permute(2, 0, 1).contiguous()


def channels_last(img: Image.Image) -> torch.Tensor:
    """A PIL RGB image as uint8 ``[3, H, W]`` whose memory is H × W × 3 (the fast transform's crops)."""
    return torch.from_numpy(np.array(img)).permute(2, 0, 1)


def op_diff(name: str, args: tuple, img: Image.Image, **kwargs: object) -> torch.Tensor:
    """|tensor op − timm's PIL op| per pixel (``kwargs`` over the policy's fill and filter)."""
    kwargs = {**KWARGS, **kwargs}
    ref = chw(NAME_TO_OP[name](img, *args, **dict(kwargs))).int()
    return (TENSOR_OPS[name](chw(img), *args, **dict(kwargs)).int() - ref).abs().float()


@pytest.mark.parametrize(("name", "args"), EXACT)
def test_point_and_colour_ops_are_timms_pixels(name: str, args: tuple) -> None:
    for img in photos():
        assert op_diff(name, args, img).max() == 0


@pytest.mark.parametrize("resample", FILTERS)
@pytest.mark.parametrize(("name", "args"), LINE_SHIFTS)
def test_shears_and_translations_are_pillows_pixels_but_float_rounding(name: str, args: tuple, resample: int) -> None:
    # bicubic: float32 taps vs Pillow's doubles, both truncated, measured ≤ 1 level at ≤ 0.3 % of pixels; bilinear:
    # Pillow's own doubles. A wrong tap, weight, per-pixel d or fill column moves whole rows or columns: tens of
    # levels over percents of the image.
    bound = 0.005 if resample == Image.Resampling.BICUBIC else 1e-4
    for img in photos():
        diff = op_diff(name, args, img, resample=resample)
        assert diff.max() <= 1 and (diff > 0).float().mean() < bound, (diff.max(), (diff > 0).float().mean())


@pytest.mark.parametrize("resample", FILTERS)
@pytest.mark.parametrize(("name", "args"), ROTATIONS)
def test_rotations_match_timms_within_the_filter_difference(name: str, args: tuple, resample: int) -> None:
    for img in photos():
        diff = op_diff(name, args, img, resample=resample)
        # OpenCV's fixed-point bicubic (a = -0.75) vs Pillow's (a = -1): measured mean ≤ 0.86, max ≤ 16 grey
        # levels (sharp edges); a misplaced fill region or a half-pixel shift gives means of 5–30
        assert diff.mean() < 1.0 and diff.max() <= 20, (diff.mean(), diff.max())


@pytest.mark.parametrize("degrees", [25.0, -10.0, 3.3, 30.0])
def test_rotation_fills_exactly_pillows_outside_pixels(degrees: float) -> None:
    """The fill goes where Pillow puts it: a pixel whose source point lies outside the image (one OpenCV
    fixed-point step, 1/1024 px, is the only room for a difference)."""
    fill = (1, 254, 3)  # a colour neither photo has
    for img in photos():
        ours = TENSOR_OPS["Rotate"](chw(img), degrees, fillcolor=fill, resample=Image.Resampling.BICUBIC)
        theirs = chw(NAME_TO_OP["Rotate"](img, degrees, fillcolor=fill, resample=Image.Resampling.BICUBIC))
        filled = [(x == torch.tensor(fill, dtype=torch.uint8)[:, None, None]).all(0) for x in (ours, theirs)]
        assert filled[1].sum() > 500 and (filled[0] != filled[1]).sum() <= 2


@pytest.mark.parametrize(("name", "args"), [*EXACT, *LINE_SHIFTS, *ROTATIONS])
def test_ops_give_the_same_pixels_from_either_memory_layout(name: str, args: tuple) -> None:
    img = photos()[1]
    planes, last = chw(img), channels_last(img)
    assert planes.is_contiguous() and not last.is_contiguous()
    assert torch.equal(TENSOR_OPS[name](planes, *args, **dict(KWARGS)), TENSOR_OPS[name](last, *args, **dict(KWARGS)))


def test_channel_planes_makes_any_layout_contiguous() -> None:
    last = channels_last(photos()[1])
    planes = channel_planes(last)
    assert planes.is_contiguous() and torch.equal(planes, last)
    assert channel_planes(planes) is planes


def test_identity_geometry_keeps_the_pixels() -> None:
    img = chw(photos()[0])
    assert torch.equal(TENSOR_OPS["ShearX"](img, 0.0, **dict(KWARGS)), img)
    assert torch.equal(TENSOR_OPS["Rotate"](img, 0.0, **dict(KWARGS)), img)


def test_posterize_follows_tf() -> None:
    img = chw(photos()[1])
    values = img.numpy().astype(np.int64)
    for bits in range(9):  # TF's reference: (x >> (8 - bits)) << (8 - bits), so 0 bits is black
        tf = torch.from_numpy(((values >> (8 - bits)) << (8 - bits)).astype(np.uint8))
        assert torch.equal(TENSOR_OPS["Posterize"](img, bits), tf), bits
    assert TENSOR_OPS["Posterize"](img, 0).max() == 0
    with pytest.raises(ValueError, match="bits"):  # what timm's PIL op does with v0's ('Posterize', 0.8, 2)
        NAME_TO_OP["Posterize"](photos()[1], 0)


@pytest.mark.parametrize("config", ["v0", "original", "rand-m9-mstd0.5", "rand-m9-mstd0.5-inc1"])
def test_policy_draws_timms_ops_and_magnitudes(config: str) -> None:
    build = rand_augment_transform if config.startswith("rand") else auto_augment_transform
    timm_policy = build(config, dict(HPARAMS))
    ours, reference = tensor_policy(timm_policy), reference_policy(timm_policy)
    assert [op.name for op in policy_ops(ours)] == [op.name for op in policy_ops(timm_policy)]
    img = photos()[0]
    diffs = []
    for seed in range(40):
        random.seed(seed)
        np.random.seed(seed)
        ref = chw(reference(img)).int()
        states = random.getstate(), np.random.get_state()[1].tolist()
        random.seed(seed)
        np.random.seed(seed)
        out = ours(chw(img)).int()
        # the same draws from the same generators: both leave them in the same state
        assert (random.getstate(), np.random.get_state()[1].tolist()) == states
        diffs.append((out - ref).abs().float().mean().item())
    assert max(diffs) < 2.0, diffs  # two geometric ops in a row: each adds its kernel difference
    assert sum(d == 0 for d in diffs) >= 10  # draws of point / colour ops only: exact


@pytest.mark.parametrize("config", ["v0", "rand-m9-mstd0.5-inc1"])
def test_fast_transform_runs_the_policy_on_tensors_seeded(config: str) -> None:
    t = fast_transform(96, train=True, auto_augment=config)
    (policy,) = (op for op in t.tensor_ops.transforms if "Augment" in type(op).__name__)
    assert t.pil_ops is None and all(isinstance(op.aug_fn, TensorOp) for op in policy_ops(policy))
    data = photo_jpeg((500, 375))
    outs = []
    for seed in (0, 1, 0):
        random.seed(seed)
        np.random.seed(seed)
        torch.manual_seed(seed)
        outs.append(t(data))
    assert outs[0].shape == (3, 96, 96) and outs[0].dtype == torch.uint8
    assert torch.equal(outs[0], outs[2]) and not torch.equal(outs[0], outs[1])  # a resume redraws the same


def test_a_failing_op_is_one_line_naming_it() -> None:
    policy = tensor_policy(auto_augment_transform("v0", dict(HPARAMS)))
    color = next(op for op in policy_ops(policy) if op.name == "Color")
    two_channels = torch.zeros(2, 8, 8, dtype=torch.uint8)
    with pytest.raises(AugmentationError, match=r"^augmentation op Color \(magnitude 9, arguments \(1\.7") as err:
        color.aug_fn(two_channels, 1.72)
    assert "\n" not in str(err.value) and "not bad data" in str(err.value)


def test_augmix_stays_on_pil() -> None:
    _, secondary, _ = create_transform(32, is_training=True, auto_augment="augmix-m5-w2", separate=True)
    assert tensor_policy(secondary.transforms[0]) is None
    assert fast_transform(32, train=True, auto_augment="augmix-m5-w2").pil_ops is not None


@pytest.mark.parametrize("config", ["v0", "rand-m9-mstd0.5-inc1"])
def test_three_epochs_on_digits_count_no_corrupt_sample(tmp_path: Path, config: str) -> None:
    write_shards(get_source("digits", None), tmp_path, shard_size=500)
    dm = ShardDataModule(str(tmp_path), resolution=32, batch_size=64, num_workers=0, auto_augment=config,
                         test_split=None)
    seen = skipped = 0
    for _ in range(3):
        for _, labels, skips in dm.loader("train"):
            seen += len(labels)
            skipped += int(skips)
    assert seen > 3 * 1000 and skipped == 0
