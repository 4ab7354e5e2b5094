"""Every YAML under configs/ parses through the real ``pipeline fit`` parser (LightningCLI + jsonargparse,
links included) and passes the checks made before any class exists, alone and in the compositions the README
shows: data + model + recipe + trainer."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest
import torch
import yaml

from pipeline.errors import PipelineError
from pipeline.training import cli

REPO = Path(__file__).resolve().parents[1]
CONFIGS = REPO / "configs"
DEMO = CONFIGS / "demo.yaml"


class Parsed(Exception):
    """Carries the parsed config out of the CLI."""

    def __init__(self, config: dict) -> None:
        super().__init__("parsed")
        self.config = config


class ParseOnly(cli.PipelineCLI):
    """``pipeline fit`` exactly as run, stopped after parsing (links applied) and its pre-launch checks."""

    def instantiate_classes(self) -> None:
        raise Parsed(self.config[self.subcommand].as_dict())


def parsed(*configs: Path, overrides: tuple[str, ...] = ()) -> dict:
    """The full config ``pipeline fit --config … OVERRIDES`` would instantiate (typed, links applied)."""
    argv = ["fit", *itertools.chain.from_iterable(("--config", str(c)) for c in configs), *overrides]
    with pytest.raises(Parsed) as done:
        cli.run_cli(argv, ParseOnly)
    return done.value.config


def group(name: str) -> list[Path]:
    return sorted((CONFIGS / name).glob("*.yaml"))


@pytest.mark.parametrize("config", sorted(CONFIGS.glob("**/*.yaml")), ids=lambda p: str(p.relative_to(CONFIGS)))
def test_every_config_parses_over_the_demo(config: Path) -> None:
    """Alone: each file over the demo (which supplies what the file does not set, e.g. data.root)."""
    full = parsed(DEMO, config)
    own = yaml.safe_load(config.read_text())
    for section, values in own.items():  # what the file sets is what the parser kept (the last file wins)
        for key, value in values.items() if isinstance(values, dict) else ():
            if not isinstance(value, dict):
                kept = full[section][key]
                assert (list(kept) if isinstance(kept, tuple) else kept) == value, (config.name, section, key)


def compositions() -> list[tuple[Path, Path, Path, Path]]:
    """Every model × trainer pair, the data and recipe files in turn: each file of every group at least once."""
    data, recipes = group("data"), group("recipe")
    pairs = list(itertools.product(group("model"), group("trainer")))
    rows = max(len(pairs), len(data), len(recipes))
    return [(data[i % len(data)], *pairs[i % len(pairs)], recipes[i % len(recipes)]) for i in range(rows)]


@pytest.mark.parametrize(("data", "model", "trainer", "recipe"), compositions(), ids=lambda p: p.stem)
def test_readme_composition_parses(data: Path, model: Path, trainer: Path, recipe: Path) -> None:
    full = parsed(data, model, recipe, trainer, overrides=("--trainer.accelerator", "cpu",
                                                                    "--trainer.sync_batchnorm", "false"))
    assert full["data"]["auto_augment"] == yaml.safe_load(recipe.read_text())["data"]["auto_augment"]
    assert full["data"]["resolution"] > 0  # linked from the model's spec: exactly one scaling mode was given
    assert full["trainer"]["max_epochs"] is not None or trainer.stem == "cpu"


@pytest.mark.parametrize(("follower", "mode"), [("fast", ("strategy", "dWr")), ("variant", ("variant", "b0")),
                                                ("compound", ("phi", 0))])
def test_a_model_file_may_follow_another(follower: str, mode: tuple[str, object]) -> None:
    """README: ``--config configs/model/fast.yaml`` after compound.yaml (and after the demo) switches the mode."""
    for first in (CONFIGS / "model" / "compound.yaml", CONFIGS / "model" / "variant.yaml", DEMO):
        full = parsed(CONFIGS / "data" / "imagenet.yaml", first, CONFIGS / "model" / f"{follower}.yaml")
        chosen = {k: full["model"][k] for k in ("variant", "phi", "strategy") if full["model"][k] is not None}
        assert chosen == dict([mode]), (first.name, follower)


def test_gpu_trainer_as_written() -> None:
    """gpu.yaml unchanged parses too; where no GPU is, fit refuses its SyncBatchNorm before launch."""
    if not torch.cuda.is_available():
        with pytest.raises(PipelineError, match=r"trainer\.sync_batchnorm needs GPUs"):
            parsed(CONFIGS / "data" / "imagenet.yaml", CONFIGS / "model" / "compound.yaml",
                   CONFIGS / "trainer" / "gpu.yaml", overrides=("--trainer.accelerator", "auto"))
    full = parsed(CONFIGS / "data" / "imagenet.yaml", CONFIGS / "model" / "compound.yaml",
                  CONFIGS / "recipe" / "efficientnet.yaml", CONFIGS / "trainer" / "gpu.yaml",
                  overrides=("--model.phi", "3", "--trainer.sync_batchnorm", "false"))
    assert full["trainer"]["accelerator"] == "gpu" and full["trainer"]["devices"] == -1
    assert full["trainer"]["precision"] == "bf16-mixed" and full["model"]["channels_last"] is True
    assert full["data"]["resolution"] == 340  # 224 × 1.15³ (the named variant B3 runs at 300)
