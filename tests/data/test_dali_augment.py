"""``data.backend: dali`` with the recipe's augmentation: the mapping, the one-line refusals, the magnitudes DALI
is given (against timm's level functions and our tensor ops, without DALI) and what the run records."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from timm.data.auto_augment import _posterize_level_to_arg, _solarize_level_to_arg, auto_augment_policy_v0

from pipeline.data.augment_colour import invert, posterize, solarize, solarize_add
from pipeline.data.dali import MISSING, DaliAugment, dali_augment, tf_posterize_mask, tf_solarize_threshold
from pipeline.data.datamodule import ShardDataModule
from pipeline.data.sharding import write_shards
from pipeline.errors import PipelineError
from tests.data.helpers import TinySource

HAS_DALI = importlib.util.find_spec("nvidia.dali") is not None
RAMP = torch.arange(256, dtype=torch.uint8).view(1, 16, 16).expand(3, 16, 16).contiguous()
BINS = 11  # DALI's image_net policy: magnitudes np.linspace(lo, hi, 11)[bin], timm's levels 0…10


def test_v0_is_dalis_image_net_policy_with_the_interpolation() -> None:
    assert dali_augment("v0", "bicubic") == DaliAugment("v0", "INTERP_CUBIC")
    assert dali_augment(None, "bilinear") == DaliAugment(None, "INTERP_LINEAR")
    assert dali_augment("v0", "bicubic").record() == "v0 (DALI auto_aug image_net policy, timm's magnitudes)"


@pytest.mark.parametrize("policy", ["original", "v0r", "v0-mstd0.5", "rand-m9-mstd0.5", "rand-m9-mstd0.5-inc1",
                                    "augmix-m5-w4-d2"])
def test_policies_without_a_dali_equivalent_are_refused_in_one_line(policy: str) -> None:
    with pytest.raises(PipelineError, match=rf"data\.auto_augment '{policy}' has no DALI equivalent") as err:
        dali_augment(policy, "bicubic")
    assert "\n" not in str(err.value)


def test_an_interpolation_dali_lacks_is_refused() -> None:
    with pytest.raises(PipelineError, match=r"data\.backend: dali has no interpolation 'random'"):
        dali_augment(None, "random")


def test_posterize_mask_is_timms_bits_with_tfs_black_image() -> None:
    for level, magnitude in enumerate(np.linspace(0, 4, BINS)):
        (bits,) = _posterize_level_to_arg(level, {})
        dali = RAMP & int(tf_posterize_mask(magnitude))  # DALI's posterize: sample & mask
        assert torch.equal(dali, posterize(RAMP, bits)), level
    assert int(tf_posterize_mask(np.linspace(0, 4, BINS)[2])) == 0  # v0's ('Posterize', 0.8, 2): black, not 1 bit


def test_solarize_threshold_is_timms_integer_one() -> None:
    for level, magnitude in enumerate(np.linspace(0, 256, BINS)):
        (thresh,) = _solarize_level_to_arg(level, {})
        threshold = float(tf_solarize_threshold(magnitude))
        dali = torch.where(threshold > RAMP, RAMP, 255 - RAMP)  # DALI's solarize
        assert torch.equal(dali, solarize(RAMP, thresh)), level
    # DALI's own float threshold (76.8 at level 3) would keep 76, which timm inverts
    assert np.linspace(0, 256, BINS)[3] > 76 and float(tf_solarize_threshold(np.linspace(0, 256, BINS)[3])) == 76


def test_datamodule_refuses_rand_augment_on_dali_before_needing_dali(tmp_path: Path) -> None:
    write_shards(TinySource({"train": 16, "val": 8}), tmp_path, shard_size=8)
    with pytest.raises(PipelineError, match=r"'rand-m9-mstd0\.5-inc1' has no DALI equivalent"):
        ShardDataModule(str(tmp_path), backend="dali", auto_augment="rand-m9-mstd0.5-inc1")


def test_datamodule_with_v0_on_dali_applies_it_or_says_dali_is_missing(tmp_path: Path) -> None:
    write_shards(TinySource({"train": 16, "val": 8}, side=40), tmp_path, shard_size=8)
    kwargs = {"batch_size": 4, "num_workers": 1, "resolution": 32, "test_split": None, "scale": (0.5, 1.0),
              "color_jitter": None, "hflip": 0.0, "backend": "dali"}
    if not HAS_DALI:
        with pytest.raises(PipelineError, match=MISSING):
            ShardDataModule(str(tmp_path), auto_augment="v0", **kwargs)
        return
    dm = ShardDataModule(str(tmp_path), auto_augment="v0", **kwargs)
    assert dm.hparams["augmentation"].startswith("v0 (DALI") and dm.hparams["backend"] == "dali"
    augmented = torch.cat([images for images, _, _ in dm.loader("train")])
    plain = torch.cat([images for images, _, _ in ShardDataModule(str(tmp_path), **kwargs).loader("train")])
    assert augmented.shape == plain.shape == (16, 3, 32, 32) and augmented.dtype == torch.uint8
    # the same seed draws the same crops: the policy is what differs
    assert int((augmented != plain).flatten(1).any(dim=1).sum()) >= 4


def test_the_run_records_backend_and_augmentation(tmp_path: Path) -> None:
    write_shards(TinySource({"train": 16, "val": 8}), tmp_path, shard_size=8)
    dm = ShardDataModule(str(tmp_path), auto_augment="rand-m9-mstd0.5-inc1", interpolation="bilinear")
    assert dict(dm.hparams) == {"eval_crop_pct": 224 / 256, "backend": "pil", "augmentation": "rand-m9-mstd0.5-inc1",
                                "interpolation": "bilinear"}
    assert ShardDataModule(str(tmp_path), color_jitter=0.4).hparams["augmentation"] == "color_jitter 0.4"
    assert ShardDataModule(str(tmp_path), color_jitter=None).hparams["augmentation"] == "none"


@pytest.mark.skipif(not HAS_DALI, reason="NVIDIA DALI not installed")
def test_dali_policy_is_timms_v0() -> None:
    from pipeline.data.dali import v0_policy

    names = {"Equalize": "equalize", "ShearX": "shear_x", "ShearY": "shear_y", "Color": "color", "Rotate": "rotate",
             "Solarize": "solarize", "SolarizeAdd": "solarize_add", "Invert": "invert", "Posterize": "posterize",
             "AutoContrast": "auto_contrast", "TranslateYRel": "translate_y"}
    timm = [[(names[op.name], op.prob, op.magnitude) for op in sub if op.prob > 0]
            for sub in auto_augment_policy_v0({})]
    dali = [[(aug.name, p, m) for aug, p, m in sub] for sub in v0_policy(224).sub_policies]
    assert [[(n, p) for n, p, _ in sub] for sub in dali] == [[(n, p) for n, p, _ in sub] for sub in timm]
    magnitude_ops = {"shear_x", "shear_y", "color", "rotate", "solarize", "solarize_add", "posterize", "translate_y"}
    assert [[m for n, _, m in sub if n in magnitude_ops] for sub in dali] == \
        [[m for n, _, m in sub if n in magnitude_ops] for sub in timm]


@pytest.mark.skipif(not HAS_DALI, reason="NVIDIA DALI not installed")
@pytest.mark.parametrize(("name", "level", "ours"), [
    ("posterize", 2, lambda x: posterize(x, 0)), ("posterize", 6, lambda x: posterize(x, 2)),
    ("solarize", 3, lambda x: solarize(x, 76)), ("solarize", 8, lambda x: solarize(x, 204)),
    ("solarize_add", 7, lambda x: solarize_add(x, 77)), ("invert", None, invert)])
def test_dali_runs_the_point_ops_as_timm(name: str, level: int | None, ours: Any) -> None:
    from nvidia.dali import fn, pipeline_def
    from nvidia.dali.auto_aug.auto_augment import apply_auto_augment
    from nvidia.dali.auto_aug.core import Policy

    from pipeline.data.dali import v0_policy

    ops = {aug.name: aug for sub in v0_policy(16).sub_policies for aug, _, _ in sub}
    hwc = RAMP.permute(1, 2, 0).contiguous().numpy()

    @pipeline_def(batch_size=1, num_threads=1, device_id=None, seed=0, enable_conditionals=True)
    def pipe() -> Any:
        images = fn.external_source(source=lambda: [hwc], batch=True, layout="HWC")
        return apply_auto_augment(Policy("one op", 11, [[(ops[name], 1.0, level)]]), images)

    built = pipe()
    built.build()
    (out,) = built.run()
    assert torch.equal(torch.from_numpy(out.as_array()[0]).permute(2, 0, 1), ours(RAMP))
