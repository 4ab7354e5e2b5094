"""The layer order of ``pipeline/``, kept by an AST scan of every import (inside functions too).

ground (errors, argument parsing, atomic writes, the preemption signal) < scaling < models, data (never
each other) < training < cluster < experiments < commands (``pipeline.commands``, ``pipeline.cli``). A
module may import its own layer and any layer below; nothing is loaded by a module-name string
(``importlib``) except the CLI's dispatch to ``pipeline.commands``.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "pipeline"

GROUND = {"pipeline", "pipeline.errors", "pipeline.arguments", "pipeline.atomic", "pipeline.preemption"}
RANK = {"ground": 0, "scaling": 1, "models": 2, "data": 2, "training": 3, "cluster": 4, "experiments": 5,
        "commands": 6, "cli": 6}


def module_name(path: Path) -> str:
    """``pipeline.x.y`` for ``pipeline/x/y.py`` (a package's ``__init__`` is the package)."""
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def layer(module: str) -> str:
    """The layer a ``pipeline`` module belongs to."""
    if module in GROUND:
        return "ground"
    parts = module.split(".")
    if parts[1] not in RANK:
        raise AssertionError(f"{module} is in no layer: add it to RANK or GROUND in {Path(__file__).name}")
    return parts[1]


def imports(path: Path) -> list[tuple[int, str]]:
    """Every ``pipeline`` module ``path`` imports, anywhere in the file, with the line."""
    tree = ast.parse(path.read_text(), filename=str(path))
    package = module_name(path) if path.name == "__init__.py" else module_name(path).rpartition(".")[0]
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                base = ".".join([*parts[: len(parts) - node.level + 1], base]).strip(".")
            found.append((node.lineno, base))
            # `from pipeline.x import y` where y is a module imports pipeline.x.y
            for a in node.names:
                sub = f"{base}.{a.name}"
                if (PACKAGE.parent / Path(*sub.split("."))).with_suffix(".py").exists() or (
                    PACKAGE.parent / Path(*sub.split("."))
                ).is_dir():
                    found.append((node.lineno, sub))
    return [(line, name) for line, name in found if name == "pipeline" or name.startswith("pipeline.")]


def may_import(mine: str, theirs: str) -> bool:
    """The rule: a layer imports itself or a lower layer; two layers of one rank (models, data) never each other."""
    return mine == theirs or RANK[theirs] < RANK[mine]


def layer_violations() -> list[str]:
    """``file:line importer (layer) -> imported (layer)`` for every import against the order."""
    bad = []
    for path in sorted(PACKAGE.rglob("*.py")):
        importer = module_name(path)
        mine = layer(importer)
        for line, imported in imports(path):
            theirs = layer(imported)
            if not may_import(mine, theirs):
                bad.append(f"{path.relative_to(PACKAGE.parent)}:{line} {importer} ({mine}) -> {imported} ({theirs})")
    return bad


def string_imports() -> list[str]:
    """``pipeline`` modules loaded by name (importlib, ``__import__``) outside the CLI's dispatch.

    A call is flagged when its argument is a ``pipeline…`` string or the file holds one as a constant;
    ``TimmCall.build`` importing the timm module an exported ``config.json`` names is not a pipeline module.
    """
    bad = []
    for path in sorted(PACKAGE.rglob("*.py")):
        if module_name(path) == "pipeline.cli":
            continue
        tree = ast.parse(path.read_text())
        names = {n.value for n in ast.walk(tree) if isinstance(n, ast.Constant) and isinstance(n.value, str)}
        names_pipeline = any(v.startswith("pipeline.") and " " not in v for v in names)
        for node in ast.walk(tree):
            if not isinstance(node, ast.Call):
                continue
            func = node.func
            called = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", None)
            if called not in ("import_module", "find_spec", "__import__"):
                continue
            arg = node.args[0] if node.args else None
            literal = isinstance(arg, ast.Constant) and str(arg.value).startswith("pipeline")
            if literal or names_pipeline:
                bad.append(f"{path.relative_to(PACKAGE.parent)}:{node.lineno} {called}")
    return bad


def test_layer_order() -> None:
    assert layer_violations() == []


def test_no_module_loaded_by_name() -> None:
    assert string_imports() == []


def test_command_modules_are_imported_only_by_the_cli() -> None:
    """Library code never imports a command module: commands are the top, and only the CLI loads them."""
    bad = [
        f"{path.relative_to(PACKAGE.parent)}:{line} -> {name}"
        for path in sorted(PACKAGE.rglob("*.py"))
        if layer(module_name(path)) not in ("commands", "cli")
        for line, name in imports(path)
        if name.startswith("pipeline.commands")
    ]
    assert bad == []


@pytest.mark.parametrize(
    ("importer", "imported", "allowed"),
    [("pipeline.models.build", "pipeline.data.stream", False), ("pipeline.training.cli", "pipeline.scaling", True),
     ("pipeline.scaling.spec", "pipeline.errors", True), ("pipeline.training.x", "pipeline.cluster.y", False)],
)
def test_the_rule_itself(importer: str, imported: str, allowed: bool) -> None:
    """The rule the scan applies: the same layer, or a lower one; models and data are separate."""
    assert may_import(layer(importer), layer(imported)) is allowed


@pytest.mark.parametrize("command", ["sweep", "submit", "report", "results", "complexity", "export", "launch", "demo"])
def test_planning_commands_load_without_torch(command: str) -> None:
    """Commands that plan, check or tabulate answer ``--help`` and bad input in under a second: no torch at import."""
    code = f"import sys, pipeline.commands.{command}; print(sorted({{'torch', 'lightning'}} & set(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=PACKAGE.parent).stdout
    assert out.strip() == "[]"
