"""An invalid config is refused before any process group starts: one line, exit status 2, no traceback."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch.distributed as dist

from pipeline import cli
from tests.training.conftest import DEMO_CONFIG, run_pipeline


@pytest.mark.parametrize(("override", "message"), [
    (["--model.foo", "1"], "unrecognized arguments: --model.foo"),
    (["--model.phi", "abc"], 'Parser key "model.phi"'),
    (["--model.phi", "-1"], "phi must be >= 0"),
    (["--model.alpha", "0.5"], "alpha must be >= 1"),
    (["--model.variant", "b3"], "give exactly one of variant"),
    (["--model.recipe.lr_per_256", "-1"], "recipe.lr_per_256 must be > 0"),
    (["--model.recipe.bn_momentum", "0.99"], "TF's 0.99"),
    (["--run.name", "a/b"], "run.name must be a plain directory name"),
])
def test_bad_configs_are_one_line_errors(
    override: list[str], message: str, digits: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["fit", "--config", str(DEMO_CONFIG), "--data.root", str(digits), "--run.root", str(tmp_path), *override]
    assert cli.main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("pipeline fit: error: ") and message in err[-1], err
    assert not dist.is_initialized()
    assert not (tmp_path / "demo").exists()  # nothing of a run was created


def test_missing_data_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["fit", "--config", str(DEMO_CONFIG), "--data.root", str(tmp_path / "none"), "--run.root", str(tmp_path)]
    assert cli.main(argv) == 2
    assert "pipeline fit: error:" in capsys.readouterr().err


def test_refusal_from_the_command_line_has_no_traceback(digits: Path, tmp_path: Path) -> None:
    done = run_pipeline("fit", "--config", str(DEMO_CONFIG), "--data.root", str(digits),
                        "--run.root", str(tmp_path), "--model.phi", "-1", cwd=tmp_path, timeout=120)
    assert done.returncode == 2
    assert "Traceback" not in done.stderr and "Initializing distributed" not in done.stderr + done.stdout
    assert done.stderr.strip().splitlines()[-1] == (
        "pipeline fit: error: phi must be >= 0 (got -1.0); phi=0 is the base network")
