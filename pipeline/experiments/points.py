"""The points of each sweep kind: grid (α, β, γ candidates at φ = 1), scale (compound φ, variants,
strategies × s) and transfer (one fine-tuning point per finished run of a source sweep).

Each function checks its inputs (one-line ``PipelineError`` naming the ``pipeline sweep`` option) and
returns the ``plan.Point`` list that ``plan.plan_sweep`` turns into runs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pipeline.errors import PipelineError
from pipeline.experiments import grid
from pipeline.experiments.plan import Point, seed_overrides
from pipeline.experiments.stats import point_name
from pipeline.scaling import grid_candidates, spread_candidates
from pipeline.scaling.spec import SPEC_KEYS
from pipeline.training.result import RESULT_FILE, read_result
from pipeline.training.rundir import CONFIG_FILE


def grid_points(target: float, tolerance: float, low: float, high: float, step: float,
                max_candidates: int | None = None) -> list[Point]:
    """One point per grid candidate (α, β, γ), named by its coefficients: a direction at nominal φ = 1 whose φ
    the planner matches so that the built net costs ``target`` × the base's flops (``target`` = 2^φ at φ = 1).

    ``max_candidates`` keeps that many spread over the (α, β, γ) box (``spread_candidates``).
    """
    found = grid_candidates(target, tolerance, low, high, step)
    if max_candidates is not None:
        if max_candidates < 1:
            raise PipelineError(f"--max-candidates must be >= 1 (got {max_candidates})")
        found = spread_candidates(found, max_candidates)
    if not found:
        raise PipelineError(f"no α, β, γ on the grid {low:g}..{high:g} step {step:g} has "
                            f"α·β²·γ² within {tolerance:g} of {target:g}: widen --tolerance or --high")
    return [Point({"phi": 1, "alpha": a, "beta": b, "gamma": g}, name=f"grid-a{a:g}-b{b:g}-g{g:g}",
                  match_flops=True, target=target) for a, b, g in found]


def scale_points(phis: list[float] | None, coefficients: dict[str, float], from_grid: Path | None,
                 variants: list[str] | None, strategies: list[str] | None, scales: list[float] | None,
                 fast_alpha: float, match_flops: bool) -> list[Point]:
    """The families asked for: compound φ (α, β, γ given, from a grid or the paper's), variants, strategies × s.

    ``coefficients`` holds the α, β, γ given (keys ``alpha``, ``beta``, ``gamma``); ``from_grid`` a finished grid
    sweep to take them from instead; strategy points match flops to s × the base's when ``match_flops``.
    """
    chosen: dict[str, Any] = dict(coefficients)
    if from_grid is not None:
        if chosen:
            raise PipelineError("give --from-grid or --alpha/--beta/--gamma, not both")
        chosen = dict(zip(("alpha", "beta", "gamma"), grid.read_choice(from_grid), strict=True))
    if (chosen or from_grid) and phis is None:
        raise PipelineError("--alpha/--beta/--gamma/--from-grid go with --phi")
    if (strategies is None) != (scales is None):
        raise PipelineError("--strategy and --scale go together: e.g. --strategy dwr dWr --scale 1,2,4")
    points = [Point({"phi": phi, **chosen}) for phi in phis or []]
    points += [Point({"variant": v}) for v in variants or []]
    points += [Point({"strategy": st, "scale": s, "fast_alpha": fast_alpha}, match_flops=match_flops)
               for st in strategies or [] for s in scales or []]
    if not points:
        raise PipelineError("nothing to train: give --phi, --variant and/or --strategy with --scale")
    return points


def transfer_points(source: Path) -> list[Point]:
    """One fine-tuning point per finished run of ``source``: its model spec keys, initialised from its run dir
    (a seeded source run ``<point>-seed<k>`` with its seed, named with its ``-seed<k>``)."""
    import yaml

    if not source.is_dir():
        raise PipelineError(f"--from {source}: not a directory (give a sweep directory, e.g. runs/scale)")
    points = []
    for run in sorted(p for p in source.iterdir() if p.is_dir()):
        record = read_result(run)
        if record is None:
            continue
        config_file = run / CONFIG_FILE
        if not config_file.is_file():
            raise PipelineError(f"{run} has a {RESULT_FILE} but no {CONFIG_FILE}: cannot tell its model")
        config = yaml.safe_load(config_file.read_text()) or {}
        model = config.get("model") or {}
        name = record["run_name"]
        seeded = point_name(name) != name  # fine-tuned with its source's seed, under its source's -seed<k>
        seed = seed_overrides(int(config.get("seed_everything") or 0)) if seeded else []
        points.append(Point(
            {k: model[k] for k in SPEC_KEYS if k in model},
            overrides=("--model.init_from", str(run), "--run.source_run", name, *seed),
            info={"source_run": name, "source_top1": record.get("top1"),
                  "source_top1_ema": record.get("top1_ema"), "source_sweep": str(source)},
            suffix=name[len(point_name(name)):],
        ))
    if not points:
        raise PipelineError(f"--from {source}: no finished run ({RESULT_FILE}) to fine-tune from")
    return points
