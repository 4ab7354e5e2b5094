"""The fast decoder against timm's transforms, device normalisation through Lightning, timm's reader, DALI on CPU."""

from __future__ import annotations

import importlib.util
import io
import random
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import pytorch_lightning as pl
import torch
from PIL import ExifTags, Image
from sklearn.datasets import load_sample_images
from timm.data import create_dataset, create_transform
from torchvision.transforms import ColorJitter

from pipeline.data.datamodule import ShardDataModule
from pipeline.data.sharding import write_shards
from pipeline.data.transforms import Uint8ColorJitter, build_transform, fast_transform, load_rgb, normalize_images
from pipeline.errors import PipelineError
from tests.data.helpers import TinySource, png_bytes


def photo_jpeg(size: tuple[int, int], orientation: int = 1) -> bytes:
    """One of scikit-learn's photos resized to ``size`` (w, h), as a quality-90 JPEG (with an EXIF orientation
    tag unless it is 1)."""
    buf, exif = io.BytesIO(), Image.Exif()
    exif[ExifTags.Base.Orientation] = orientation
    Image.fromarray(load_sample_images().images[0]).resize(size, Image.Resampling.BICUBIC).save(
        buf, format="JPEG", quality=90, **({"exif": exif.tobytes()} if orientation != 1 else {}))
    return buf.getvalue()


def grey_jpeg() -> bytes:
    """A greyscale (one-component) JPEG of one of scikit-learn's photos."""
    buf = io.BytesIO()
    Image.fromarray(load_sample_images().images[1]).convert("L").resize((320, 240)).save(buf, format="JPEG")
    return buf.getvalue()


def timm_uint8(data: bytes, resolution: int, train: bool) -> torch.Tensor:
    """timm's own transform (prefetcher mode: uint8 CHW) on the fully decoded image."""
    t = create_transform(resolution, is_training=train, color_jitter=0.4, interpolation="bicubic", use_prefetcher=True)
    return torch.as_tensor(np.asarray(t(Image.open(io.BytesIO(data)).convert("RGB"))))


@pytest.mark.parametrize("size", [(500, 375), (375, 500), (1200, 900)])
def test_eval_matches_timm(size: tuple[int, int]) -> None:
    data = photo_jpeg(size)
    ours = fast_transform(224, train=False)(data).int()
    diff = (ours - timm_uint8(data, 224, train=False).int()).abs().float()
    # 1200×900 decodes at 1/2 scale (the crop box stays ≥ 224): a DCT-scaled decode, not a pixel-exact one
    assert ours.shape == (3, 224, 224) and diff.mean() < (2.5 if size[0] > 1000 else 1.0)


def test_train_draws_the_same_augmentation_as_timm() -> None:
    data = photo_jpeg((500, 375))
    ours_t = fast_transform(224, train=True)
    diffs = []
    for seed in range(8):
        random.seed(seed)
        torch.manual_seed(seed)
        ours = ours_t(data).int()
        random.seed(seed)
        torch.manual_seed(seed)
        diffs.append((ours - timm_uint8(data, 224, train=True).int()).abs().float().mean().item())
    # same crop box, flip and jitter factors; only PIL's resize/blend rounding differs from ours
    assert max(diffs) < 3.0, diffs
    random.seed(0)
    torch.manual_seed(0)
    other = fast_transform(224, train=True)(data).int()
    assert (other - ours_t(data).int()).abs().float().mean() > 5  # different draws do differ


def test_fused_colour_jitter_is_torchvisions() -> None:
    jitter = ColorJitter(0.4, 0.4, 0.4)
    noise = torch.randint(0, 256, (3, 40, 30), dtype=torch.uint8)
    photo = torch.tensor(load_sample_images().images[0][100:324, 200:424]).permute(2, 0, 1).contiguous()
    for x in (noise, photo):
        for seed in range(100):
            torch.manual_seed(seed)
            expected = jitter(x)
            torch.manual_seed(seed)
            assert torch.equal(Uint8ColorJitter(jitter)(x), expected)


def test_dct_scale_from_the_crop_box() -> None:
    buf = io.BytesIO()
    Image.new("RGB", (1024, 800), (1, 2, 3)).save(buf, format="JPEG")
    img, box = load_rgb(Image.open(io.BytesIO(buf.getvalue())), buf.getvalue(), (0, 0, 256, 200), (32, 25))
    assert img.size == (128, 100) and box == (0, 0, 32, 25)  # 1/8: the box is exactly the output size
    img, _ = load_rgb(Image.open(io.BytesIO(buf.getvalue())), buf.getvalue(), (0, 0, 256, 200), (33, 25))
    assert img.size == (256, 200)  # 1/8 would leave 32 < 33 columns: 1/4
    img, _ = load_rgb(Image.open(io.BytesIO(buf.getvalue())), buf.getvalue(), (0, 0, 1024, 800), (600, 600))
    assert img.shape == (800, 1024, 3)  # no reduction fits: TorchCodec's decode, an HWC tensor
    grey_png = png_bytes(7)
    assert load_rgb(Image.open(io.BytesIO(grey_png)), grey_png, (0, 0, 8, 8), (4, 4))[0].mode == "RGB"


@pytest.mark.parametrize("kind", ["RGB", "L", "rotated"])
def test_full_scale_jpeg_decodes_to_pils_pixels(kind: str) -> None:
    """TorchCodec decodes upright RGB JPEGs no DCT scale fits (PIL the others): the same pixels as PIL's decode.

    An EXIF-rotated JPEG stays with PIL, which (like timm's folder readers) does not rotate it; TorchCodec would.
    """
    data = {"RGB": photo_jpeg((320, 240)), "L": grey_jpeg(), "rotated": photo_jpeg((320, 240), orientation=6)}[kind]
    img, box = load_rgb(Image.open(io.BytesIO(data)), data, (10.5, 20.0, 200.0, 150.0), (224, 224))
    expected = np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))
    assert isinstance(img, torch.Tensor) == (kind == "RGB") and box == (10.5, 20.0, 200.0, 150.0)
    assert np.array_equal(np.asarray(img), expected)


@pytest.mark.parametrize("mode", ["lanczos", "nearest"])
def test_pil_only_interpolation_equals_timms_eval(mode: str) -> None:
    """Filters torch has no uint8 kernel for resize with PIL, also from TorchCodec's tensor: timm's pixels."""
    data = photo_jpeg((320, 240))
    ours = fast_transform(224, train=False, interpolation=mode)(data)
    t = create_transform(224, is_training=False, interpolation=mode, crop_pct=0.875, use_prefetcher=True)
    assert torch.equal(ours, torch.as_tensor(np.asarray(t(Image.open(io.BytesIO(data)).convert("RGB")))))


def test_normalize_on_device_equals_timms_float_transform() -> None:
    data = photo_jpeg((500, 375))
    expected = build_transform(224, train=False)(Image.open(io.BytesIO(data)).convert("RGB"))
    got = normalize_images(timm_uint8(data, 224, train=False)[None])[0]
    assert got.dtype == torch.float32 and torch.allclose(got, expected, atol=1e-5)
    assert normalize_images(expected) is expected  # floats pass through


class Probe(pl.LightningModule):
    """Records the images' dtype and range in every step; trains a linear layer."""

    def __init__(self) -> None:
        super().__init__()
        self.layer = torch.nn.Linear(3, 5)
        self.seen: list[tuple[str, torch.dtype, float]] = []

    def _step(self, stage: str, batch: tuple) -> torch.Tensor:
        images, labels, _ = batch
        self.seen.append((stage, images.dtype, float(images.min())))
        return torch.nn.functional.cross_entropy(self.layer(images.mean((2, 3))), labels)

    def training_step(self, batch: tuple, _: int) -> torch.Tensor:
        return self._step("train", batch)

    def validation_step(self, batch: tuple, _: int) -> None:
        self._step("val", batch)

    def test_step(self, batch: tuple, _: int) -> None:
        self._step("test", batch)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.1)


def test_lightning_normalises_in_fit_validate_and_test(tmp_path: Path) -> None:
    write_shards(TinySource({"train": 32, "val": 8, "test": 8}), tmp_path, shard_size=8)
    dm = ShardDataModule(str(tmp_path), resolution=16, batch_size=8, num_workers=0, shuffle_buffer=8)
    model = Probe()
    trainer = pl.Trainer(max_epochs=1, accelerator="cpu", logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False)
    trainer.fit(model, datamodule=dm)
    trainer.validate(model, datamodule=dm)
    trainer.test(model, datamodule=dm)
    stages = Counter(stage for stage, _, _ in model.seen)
    assert stages["train"] == 4 and stages["val"] >= 2 and stages["test"] == 1
    assert {dtype for _, dtype, _ in model.seen} == {torch.float32}
    assert min(m for _, _, m in model.seen) < 0  # normalised (mean subtracted), not raw 0…255


def test_timm_reads_our_shards(tmp_path: Path) -> None:
    write_shards(TinySource({"train": 30, "val": 7}), tmp_path, shard_size=8)
    ds = create_dataset("wds/tiny", root=str(tmp_path), split="train", is_training=True, batch_size=1)
    labels = Counter(target for _, target in ds)
    assert sum(labels.values()) == 30 and labels == Counter(i % 5 for i in range(30))
    val = create_dataset("wds/tiny", root=str(tmp_path), split="val", is_training=False)
    assert len(val) == 7 and sum(1 for _ in val) == 7


def test_bad_backend_is_one_line(tmp_path: Path) -> None:
    write_shards(TinySource({"train": 16, "val": 8}), tmp_path, shard_size=8)
    with pytest.raises(PipelineError, match=r"data\.backend must be pil or dali, not 'gpu'"):
        ShardDataModule(str(tmp_path), backend="gpu")


@pytest.mark.skipif(importlib.util.find_spec("nvidia.dali") is None,
                    reason="NVIDIA DALI not installed (requirements-dev.txt installs it)")
def test_dali_backend_on_cpu(tmp_path: Path) -> None:
    write_shards(TinySource({"train": 45, "val": 13}), tmp_path, shard_size=8)
    world = 2
    train_batches, val_labels = [], Counter()
    for rank in range(world):
        dm = ShardDataModule(str(tmp_path), resolution=16, batch_size=4, num_workers=1, backend="dali",
                             test_split=None)
        dm.world = lambda rank=rank: (rank, world)
        train = dm.loader("train")
        for _ in range(2):  # two epochs: the same length every epoch
            batches = list(train)
            assert len(batches) == len(train) == 45 // (world * 4)
            train_batches.append(len(batches))
        images, _, skipped = batches[0]
        assert images.shape == (4, 3, 16, 16) and images.dtype == torch.uint8 and int(skipped) == 0
        assert normalize_images(images).dtype == torch.float32
        val_labels.update(label for _, labels, _ in dm.loader("val") for label in labels.tolist())
    assert len(set(train_batches)) == 1  # equal train batches on every rank
    assert val_labels == Counter(i % 5 for i in range(13))  # exact eval: every val sample once across ranks
