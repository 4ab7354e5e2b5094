"""Run names and directories, and the W&B id that stays the same across restarts."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.errors import PipelineError
from pipeline.scaling.spec import resolve_spec
from pipeline.training.rundir import RunOptions, run_dir, run_name, wandb_run_id


def test_names_say_strategy_and_phi_or_s() -> None:
    assert run_name(resolve_spec(phi=2)) == "compound-phi2"
    assert run_name(resolve_spec(strategy="dWr", scale=4)) == "dWr-s4"
    assert run_name(resolve_spec(variant="b3")) == "b3"
    assert run_name(resolve_spec(phi=1, base="resnet50")) == "resnet50-compound-phi1"
    assert run_name(resolve_spec(phi=1), dataset="cifar100") == "compound-phi1-cifar100"


def test_run_dir_layout_and_bad_names(tmp_path: Path) -> None:
    spec = resolve_spec(phi=0.5)
    assert run_dir(RunOptions(root=str(tmp_path)), spec) == tmp_path / "single" / "compound-phi0.5"
    assert run_dir(RunOptions(root=str(tmp_path), sweep="grid", name="x"), spec) == tmp_path / "grid" / "x"
    with pytest.raises(PipelineError, match=r"run\.name"):
        run_dir(RunOptions(name="../escape"), spec)


def test_wandb_id_is_created_once_and_reused(tmp_path: Path) -> None:
    assert wandb_run_id(tmp_path, create=False) is None
    first = wandb_run_id(tmp_path, create=True)
    assert first and wandb_run_id(tmp_path, create=True) == first == wandb_run_id(tmp_path, create=False)
    assert [p.name for p in tmp_path.iterdir()] == ["wandb_id"]
