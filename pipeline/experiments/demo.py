"""The demo's study (``pipeline demo``): a miniature scaling study on the embedded digits, 2-process DDP on
CPU, W&B offline.

Compound φ = 0, 1, 2 and fast compound scaling (dWr) at the flops φ = 2 (the largest φ) measures, as one scale sweep
(``pipeline.experiments.plan`` → run manifest → ``pipeline fit`` per run, in order), then the report
(``runs/demo/report/report.md|html``) and its headline table. Each run is one ``pipeline fit --config
configs/demo.yaml …`` in its own process (Lightning's DDP launcher re-executes the command line for rank 1,
so it must be the fit command, not this one). A run whose ``result.json`` exists is reused; an interrupted
one resumes from its ``last.ckpt``.
"""

from __future__ import annotations

from pathlib import Path

from pipeline.experiments.plan import Point, SweepPlan, plan_sweep

REPO = Path(__file__).resolve().parents[2]
DEMO_CONFIG = REPO / "configs" / "demo.yaml"
SWEEP = "demo"
# top1: the test split's, of the checkpoint selected on val (val_top1)
COLUMNS = ("run_name", "strategy", "phi", "s", "resolution", "params", "flops", "acts", "val_top1", "top1",
           "top1_ema", "epoch_time_s", "fit_time_s")


def demo_plan(config: Path, phis: list[float], match: list[str], match_at: list[float],
              overrides: list[str]) -> SweepPlan:
    """Compound φ points, then each ``match`` strategy at the flops factor each ``match_at`` φ measured
    (bisection on s)."""
    compound = [Point({"phi": phi}) for phi in phis]
    plan = plan_sweep("scale", SWEEP, str(config), overrides, compound)
    growths = [run.flops / plan.base_flops for run in plan.runs if run.spec.phi in match_at]
    matched = [Point({"strategy": st, "scale": round(g, 2)}, match_flops=True) for st in match for g in growths]
    return plan_sweep("scale", SWEEP, str(config), overrides, compound + matched) if matched else plan


def ensure_digits(root: Path) -> None:
    """Write the embedded digits shards to ``root`` unless its manifest is already there."""
    if (root / "manifest.json").is_file():
        print(f"digits shards: {root} (already written)")
        return
    from pipeline.data.sharding import write_shards
    from pipeline.data.sources import get_source

    manifest = write_shards(get_source("digits", None), root)
    print(f"digits shards: {root} ({manifest.num_classes} classes, written)")
