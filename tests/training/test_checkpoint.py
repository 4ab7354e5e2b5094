"""Checkpoints are written atomically and loaded with weights_only=True."""

from __future__ import annotations

import pickle
from pathlib import Path

import pytest
import torch

from pipeline.errors import PipelineError
from pipeline.training.checkpoint import AtomicCheckpointIO
from pipeline.training.recipe import Recipe


class Unlisted:
    """Not a safe global: weights_only loading must refuse it."""


def test_a_failed_write_leaves_the_previous_checkpoint_intact(tmp_path: Path) -> None:
    io = AtomicCheckpointIO()
    path = tmp_path / "checkpoints" / "last.ckpt"
    io.save_checkpoint({"global_step": 4, "w": torch.ones(3)}, path)
    with pytest.raises((pickle.PicklingError, AttributeError, TypeError)):
        io.save_checkpoint({"global_step": 8, "bad": lambda: None}, path)  # torch.save fails mid-write
    loaded = io.load_checkpoint(path)
    assert loaded["global_step"] == 4 and torch.equal(loaded["w"], torch.ones(3))
    assert sorted(p.name for p in path.parent.iterdir()) == ["last.ckpt"]  # no temp file left behind


def test_loads_are_weights_only(tmp_path: Path) -> None:
    io = AtomicCheckpointIO()
    path = tmp_path / "evil.ckpt"
    torch.save({"obj": Unlisted()}, path)
    with pytest.raises(PipelineError, match=r"refused by weights_only loading \(Unsupported global: .*Unlisted"):
        io.load_checkpoint(path)
    with pytest.raises(ValueError, match="weights_only=False"):
        io.load_checkpoint(path, weights_only=False)
    with pytest.raises(FileNotFoundError):
        io.load_checkpoint(tmp_path / "missing.ckpt")


def test_recipe_hyperparameters_load_safely(tmp_path: Path) -> None:
    io = AtomicCheckpointIO()
    path = tmp_path / "hp.ckpt"
    io.save_checkpoint({"hyper_parameters": {"recipe": Recipe(lr_per_256=0.1)}}, path)
    assert io.load_checkpoint(path)["hyper_parameters"]["recipe"].lr_per_256 == 0.1
    io.remove_checkpoint(path)
    assert not path.exists()
