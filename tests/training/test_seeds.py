"""Must-show: two DDP ranks draw different drop-path masks in the same step (per-rank seeds, timm's seed + rank)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml

from tests.training.conftest import DEMO_CONFIG, REPO, run_pipeline


def fit_and_record(digits: Path, root: Path, name: str, *extra: str) -> list[list[torch.Tensor]]:
    """Per rank, per step: the [layers, batch] keep-masks of a real 2-process gloo fit (2 steps)."""
    probe = root / f"{name}-probe.yaml"
    out = root / f"{name}-draws"
    probe.write_text(yaml.safe_dump({"trainer": {"callbacks": [
        {"class_path": "tests.training.draw_probe.RecordDraws", "init_args": {"out_dir": str(out)}}]}}))
    done = run_pipeline(
        "fit", "--config", str(DEMO_CONFIG), "--config", str(probe), "--data.root", str(digits),
        "--run.root", str(root), "--run.name", name, "--model.phi", "null", "--model.strategy", "w",
        "--model.scale", "0.25", "--model.drop_path", "0.5", "--data.batch_size", "8", "--data.num_workers", "0",
        "--trainer.max_steps", "2", "--trainer.limit_val_batches", "0", *extra,
        cwd=root, env={"PYTHONPATH": str(REPO)},
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return [torch.load(out / f"draws-rank{rank}.pt", weights_only=True) for rank in (0, 1)]


@pytest.mark.slow
def test_ranks_draw_different_drop_path_masks_and_runs_repeat(digits: Path, tmp_path: Path) -> None:
    rank0, rank1 = fit_and_record(digits, tmp_path, "a")
    assert len(rank0) == len(rank1) == 2
    for step0, step1 in zip(rank0, rank1, strict=True):
        assert step0.shape == step1.shape == (9, 8)  # B0's 9 residual blocks (one DropPath each) × 8 images
        assert 0 < step0.float().mean() < 1 and 0 < step1.float().mean() < 1  # drop_path 0.5 drops some, keeps some
        assert not torch.equal(step0, step1)  # the same step draws differently on the two ranks
    assert not torch.equal(rank0[0], rank0[1])  # and differently from step to step
    again0, again1 = fit_and_record(digits, tmp_path, "b")  # seeded: a second run draws the same
    assert all(torch.equal(x, y) for x, y in zip(rank0 + rank1, again0 + again1, strict=True))
