"""One source of pins: environment.yml (GPU clusters) installs what requirements*.txt (CPU, CI) install,
and those pins satisfy pyproject's ranges (upper bounds where the code uses a private API)."""

from __future__ import annotations

from pathlib import Path

import pytest
import tomllib
import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

REPO = Path(__file__).resolve().parents[1]


def requirements(lines: list[str]) -> dict[str, Requirement]:
    """Requirement lines (comments, blanks and pip options such as --extra-index-url left out), by package name."""
    reqs = [Requirement(line.split("#")[0].strip()) for line in lines
            if line.split("#")[0].strip() and not line.strip().startswith("-")]
    return {canonicalize_name(r.name): r for r in reqs}


def pip_files() -> dict[str, Requirement]:
    return requirements([*(REPO / "requirements.txt").read_text().splitlines(),
                         *(REPO / "requirements-dev.txt").read_text().splitlines()])


def conda_pip() -> dict[str, Requirement]:
    deps = yaml.safe_load((REPO / "environment.yml").read_text())["dependencies"]
    return requirements(next(d["pip"] for d in deps if isinstance(d, dict)))


def test_environment_yml_installs_the_same_pins_as_requirements() -> None:
    pip, conda = pip_files(), conda_pip()
    assert sorted(pip) == sorted(conda)
    for name, req in pip.items():
        assert (str(req.specifier), req.extras) == (str(conda[name].specifier), conda[name].extras), name
    for name in ("torch", "torchvision", "pytorch-lightning", "timm", "webdataset", "wandb", "pytest-timeout"):
        assert name in conda and (name == "pytest-timeout" or str(conda[name].specifier).startswith("==")), name


def test_pins_satisfy_pyproject_and_private_apis_are_bounded() -> None:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    declared = requirements(project["dependencies"])
    pins = pip_files()
    for name, req in declared.items():
        pinned = pins[name].specifier
        if str(pinned).startswith("=="):
            assert req.specifier.contains(str(pinned)[2:]), (name, str(req.specifier), str(pinned))
    for name in ("pytorch-lightning", "timm"):  # CSVLogger internals; timm's _gen_efficientnet
        assert any(spec.operator == "<" for spec in declared[name].specifier), name


@pytest.mark.parametrize("name", ["torch", "torchvision", "pytorch-lightning", "timm", "webdataset", "wandb"])
def test_the_installed_versions_are_the_pinned_ones(name: str) -> None:
    from importlib.metadata import version

    pinned = str(pip_files()[name].specifier).removeprefix("==")
    assert version(name).split("+")[0] == pinned
