"""pipeline export: a fresh process with only timm, torch and safetensors rebuilds the network, same logits."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch
from safetensors.torch import load_file, save_file

from pipeline import cli
from pipeline.data.datamodule import ShardDataModule
from pipeline.data.sharding import write_shards
from pipeline.data.sources import get_source
from pipeline.training.module import ScaledClassifier
from pipeline.training.recipe import Recipe

# What a timm user runs: registered architectures through timm's local-dir loader, scaled ones through the
# generator call recorded in config.json. Only timm, torch and safetensors are imported.
TIMM_ONLY = """
import importlib, json, sys
import safetensors.torch, timm, torch
x = safetensors.torch.load_file(sys.argv[1])["x"]
out = {}
for folder in sys.argv[2:]:
    cfg = json.load(open(f"{folder}/config.json"))["generator"]
    model = getattr(importlib.import_module(cfg["module"]), cfg["function"])(**cfg["kwargs"])
    model.load_state_dict(safetensors.torch.load_file(f"{folder}/model.safetensors"))
    out[folder] = model.eval()(x)
    if timm.is_model(json.load(open(f"{folder}/config.json"))["architecture"]):
        out[folder + ":local-dir"] = timm.create_model(f"local-dir:{folder}", pretrained=True).eval()(x)
assert not any(m == "pipeline" or m.startswith("pipeline.") for m in sys.modules), "pipeline was imported"
safetensors.torch.save_file({k: v.contiguous() for k, v in out.items()}, sys.argv[1] + ".out")
"""


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, ScaledClassifier]]:
    """Real Lightning checkpoints of B0 (φ = 0: timm registers it) and a Dollár-scaled net (w, s = ½: timm does
    not) after a few AdamW steps on digits (EMA ≠ raw weights)."""
    root = tmp_path_factory.mktemp("export")
    write_shards(get_source("digits", None), root / "digits")
    out = {}
    for name, spec in (("b0", {"phi": 0}), ("w-half", {"strategy": "w", "scale": 0.5})):
        module = ScaledClassifier(**spec, base_resolution=32, num_classes=10, recipe=Recipe(
            opt="adamw", opt_kwargs={}, lr_per_256=0.02, weight_decay=0.0, sched="cosine", warmup_epochs=0,
            ema_epochs=0.045))  # ≈ 0.5 per update at 44 updates per epoch: EMA ≠ raw after 3 steps
        data = ShardDataModule(str(root / "digits"), resolution=module.spec.resolution, batch_size=32,
                               num_workers=0, color_jitter=None)
        trainer = pl.Trainer(accelerator="cpu", devices=1, max_steps=3, limit_val_batches=0, logger=False,
                             enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                             use_distributed_sampler=False)
        trainer.fit(module, data)
        path = root / f"{name}.ckpt"
        trainer.save_checkpoint(path)
        out[name] = path, module.eval()
    return out


def test_timm_alone_gives_the_checkpoint_logits(checkpoints: dict, tmp_path: Path) -> None:
    x = torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    save_file({"x": x}, tmp_path / "x.safetensors")
    expected, folders = {}, []
    for name, (path, module) in checkpoints.items():
        for ema in (True, False):
            folder = tmp_path / f"{name}-{'ema' if ema else 'raw'}"
            argv = ["export", str(path), "--out", str(folder), "--ema" if ema else "--no-ema"]
            assert cli.main(argv) == 0
            with torch.no_grad():
                expected[str(folder)] = (module.ema.module if ema else module.model)(x)
            folders.append(str(folder))
    config = json.loads((tmp_path / "b0-ema" / "config.json").read_text())
    assert config["architecture"] == "efficientnet_b0" and config["num_classes"] == 10
    assert json.loads((tmp_path / "w-half-ema" / "config.json").read_text())["architecture"] == "efficientnet-w-s0.5"
    done = subprocess.run([sys.executable, "-c", TIMM_ONLY, str(tmp_path / "x.safetensors"), *folders],
                          cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    got = load_file(tmp_path / "x.safetensors.out")
    assert set(got) == {*folders, str(tmp_path / "b0-ema") + ":local-dir", str(tmp_path / "b0-raw") + ":local-dir"}
    for key, logits in got.items():
        torch.testing.assert_close(logits, expected[key.removesuffix(":local-dir")], rtol=1e-4, atol=1e-5)
    # the EMA and the raw weights are different networks: exporting one is not exporting the other
    assert not torch.allclose(expected[folders[0]], expected[folders[1]], atol=1e-3)


def test_export_refuses_a_missing_checkpoint_in_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["export", str(tmp_path / "none")]) == 2
    assert capsys.readouterr().err.strip() == (
        f"pipeline export: error: checkpoint {tmp_path / 'none'} does not exist (give a run directory or a .ckpt file)")
