"""Run names and directories, the W&B id that stays the same across restarts, and the refusal to mix runs."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from pipeline.errors import PipelineError
from pipeline.scaling.spec import resolve_spec
from pipeline.training.rundir import (
    CONFIG_FILE,
    RunOptions,
    check_run_dir,
    config_differences,
    run_dir,
    run_name,
    wandb_run_id,
)


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


STORED = {"seed_everything": 0, "trainer": {"devices": 2, "max_epochs": 6, "max_steps": -1, "log_every_n_steps": 5},
          "model": {"phi": 0, "recipe": {"lr_per_256": 0.008, "opt": "adamw"}},
          "run": {"root": "runs", "sweep": "demo", "name": None}, "ckpt_path": None}


def changed(**updates: object) -> dict:
    """STORED with dotted keys replaced."""
    config = yaml.safe_load(yaml.safe_dump(STORED))
    for key, value in updates.items():
        *parents, leaf = key.split("__")
        node = config
        for part in parents:
            node = node[part]
        node[leaf] = value
    return config


def test_differences_name_the_keys_that_change_results() -> None:
    assert config_differences(STORED, changed(), resuming=False) == []
    assert config_differences(STORED, changed(trainer__devices="2"), resuming=False) == []  # CLI string vs YAML int
    assert config_differences(STORED, changed(model__recipe__lr_per_256=0.01, seed_everything=1), resuming=False) == [
        "model.recipe.lr_per_256: 0.008 → 0.01", "seed_everything: 0 → 1"]
    # where the directory is and what is printed never count
    assert config_differences(STORED, changed(run__root="/abs/runs", trainer__log_every_n_steps=1), False) == []


def test_only_a_resume_may_extend_training() -> None:
    longer = changed(trainer__max_epochs=8, trainer__max_steps=-1)
    assert config_differences(STORED, longer, resuming=True) == []
    assert config_differences(STORED, longer, resuming=False) == ["trainer.max_epochs: 6 → 8"]
    assert config_differences(STORED, changed(trainer__max_epochs=4), resuming=True) == ["trainer.max_epochs: 6 → 4"]
    capped = yaml.safe_load(yaml.safe_dump(STORED))
    capped["trainer"]["max_steps"] = 3
    assert config_differences(capped, STORED, resuming=True) == []  # 3 → -1 (no cap) extends


def test_run_dir_refusals(tmp_path: Path) -> None:
    check_run_dir(tmp_path / "new", STORED, None)  # nothing there yet
    (tmp_path / CONFIG_FILE).write_text(yaml.safe_dump(STORED))
    check_run_dir(tmp_path, changed(), None)  # same config, nothing trained yet (a start that crashed early)
    with pytest.raises(PipelineError, match=r"another config \(model\.recipe\.lr_per_256: 0\.008 → 0\.01\); "
                                            r"give this run its own --run\.name or --run\.sweep"):
        check_run_dir(tmp_path, changed(model__recipe__lr_per_256=0.01), "last")
    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "checkpoints" / "last.ckpt").write_bytes(b"x")
    with pytest.raises(PipelineError, match=r"already holds a run \(last\.ckpt\) that this fit would overwrite"):
        check_run_dir(tmp_path, changed(), None)
    check_run_dir(tmp_path, changed(trainer__max_epochs=8), "last")  # resume, extended
    many = changed(seed_everything=1, model__phi=1, model__recipe__opt="sgd", model__recipe__lr_per_256=1.0)
    with pytest.raises(PipelineError, match=r"\(and 1 more\)"):
        check_run_dir(tmp_path, many, "last")


def test_a_key_the_code_gained_since_the_stored_run_is_a_difference() -> None:
    newer = changed()
    newer["data"] = {"new_key": 3}
    assert config_differences(STORED, newer, resuming=True) == ["data.new_key: None → 3"]
