"""Must-show: ``--model.compile true`` trains (the complexity is counted on the eager network, before compile)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pipeline.models.complexity import Complexity, count_complexity
from pipeline.training.module import ScaledClassifier
from tests.training.conftest import DEMO_CONFIG, run_pipeline

# The smallest EfficientNet the builder makes (depth × 0.25: one block per stage) keeps inductor's CPU
# compile of the training graph short: 207 s with a cold inductor cache (7 min with the 2 cores oversubscribed).
TINY = ("--model.phi", "null", "--model.strategy", "d", "--model.scale", "0.25")
# Batches of 4 divide both the 512 images of precise BN and the 180 of the test split: every batch has the same
# shape, so inductor compiles 3 graphs (training, precise BN, evaluation) and not a 4th, dynamic-shape one for the
# test's last batch of 20 (at batch 32 the fit took 131 s instead of 111 s).
BATCH = ("--data.batch_size", "4")


@pytest.mark.slow
def test_two_step_fit_with_compile(digits: Path, tmp_path: Path) -> None:
    done = run_pipeline(
        "fit", "--config", str(DEMO_CONFIG), "--data.root", str(digits), "--run.root", str(tmp_path),
        "--run.name", "compiled", *TINY, *BATCH, "--model.compile", "true", "--trainer.devices", "1",
        "--trainer.strategy", "auto", "--trainer.max_steps", "2", "--trainer.limit_val_batches", "0",
        cwd=tmp_path, timeout=840,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    result = json.loads((tmp_path / "demo" / "compiled" / "result.json").read_text())
    assert result["global_step"] == 2
    # no validation ran (limit_val_batches 0): nothing was selected, the final weights are reported on test
    assert (result["selected_on"], result["reported_on"], result["reported_checkpoint"]) == (None, "test", None)
    assert result["val_top1"] is None and 0 <= result["top1"] <= 1
    eager = ScaledClassifier(strategy="d", scale=0.25, base_resolution=32, num_classes=10)
    assert (result["flops"], result["params"], result["acts"]) == (3_696_230, 1_591_558, 84_710)
    assert eager.complexity == count_complexity(eager.model, 32) == Complexity(3_696_230, 1_591_558, 84_710)
