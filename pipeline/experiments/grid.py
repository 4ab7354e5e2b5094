"""The α, β, γ grid search's outcome: candidates ranked by validation top-1 with its binomial error.

Written by ``pipeline sweep grid`` once every candidate has a result record (``grid.json`` + ``grid.md`` in
the sweep directory, ``finish_grid``) and read by ``pipeline sweep scale --from-grid`` (``read_choice``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pipeline.atomic import atomic_write_json, atomic_write_text
from pipeline.errors import PipelineError
from pipeline.experiments.plan import SweepPlan
from pipeline.experiments.stats import Z95, binomial_se
from pipeline.experiments.tables import markdown_table
from pipeline.training.result import read_result

GRID_FILE = "grid.json"
GRID_TABLE = "grid.md"
METRICS = ("top1", "top1_ema")


def rank(records: list[dict[str, Any]], val_images: int, metric: str = "top1") -> list[dict[str, Any]]:
    """Candidates best first: by ``metric`` (higher), ties by flops (lower); each with its standard error and
    whether it is within the noise of the best (difference < 1.96·√(se₁² + se₂²), a 95 % two-sided test)."""
    if metric not in METRICS:
        raise PipelineError(f"rank metric must be one of {', '.join(METRICS)} (got {metric!r})")
    done = [r for r in records if r.get(metric) is not None]
    if not done:
        raise PipelineError(f"no grid candidate has a {metric} yet: nothing to rank")
    done.sort(key=lambda r: (-r[metric], r["flops"]))
    best = done[0]
    best_se = binomial_se(best[metric], val_images)
    ranking = []
    for place, r in enumerate(done, 1):
        se = binomial_se(r[metric], val_images)
        gap = best[metric] - r[metric]
        ranking.append({
            "rank": place, "run_name": r["run_name"], "alpha": r["alpha"], "beta": r["beta"], "gamma": r["gamma"],
            "flops": r["flops"], "params": r["params"], "acts": r["acts"], "resolution": r["resolution"],
            metric: r[metric], "se": se, "within_noise_of_best": gap <= Z95 * (se**2 + best_se**2) ** 0.5,
        })
    return ranking


RANKING_HEADERS = ("rank", "α", "β", "γ", "αβ²γ²", "res", "flops (M)", "params (M)", "top-1 (%) ± 95 %",
                   "within noise of best")


def ranking_rows(ranking: list[dict[str, Any]], metric: str) -> list[list[str]]:
    """The ranking's table cells (accuracy ± its 95 % binomial interval), under RANKING_HEADERS."""
    return [[str(r["rank"]), f"{r['alpha']:g}", f"{r['beta']:g}", f"{r['gamma']:g}",
             f"{r['alpha'] * r['beta'] ** 2 * r['gamma'] ** 2:.3f}", str(r["resolution"]), f"{r['flops'] / 1e6:.2f}",
             f"{r['params'] / 1e6:.2f}", f"{100 * r[metric]:.1f} ± {100 * Z95 * r['se']:.1f}",
             "yes" if r["within_noise_of_best"] else "no"] for r in ranking]


def write_ranking(directory: Path, records: list[dict[str, Any]], val_images: int, metric: str) -> dict[str, Any]:
    """Rank the candidates, write ``grid.json`` (chosen α, β, γ + ranking) and ``grid.md``; return grid.json's dict."""
    ranking = rank(records, val_images, metric)
    best = ranking[0]
    result = {"alpha": best["alpha"], "beta": best["beta"], "gamma": best["gamma"], "metric": metric,
              "val_images": val_images, "ranking": ranking}
    atomic_write_json(directory / GRID_FILE, result)
    atomic_write_text(directory / GRID_TABLE, f"# Grid search ({metric}, {val_images} validation images)\n\n"
                      f"chosen: α = {best['alpha']:g}, β = {best['beta']:g}, γ = {best['gamma']:g}\n\n"
                      f"{markdown_table(RANKING_HEADERS, ranking_rows(ranking, metric))}\n")
    return result


def finish_grid(plan: SweepPlan, metric: str) -> str | None:
    """With every candidate of the grid sweep ``plan`` finished, rank them by ``metric`` and write the chosen
    α, β, γ (grid.json, grid.md); return what to print (the ranking and the next command), else None."""
    records = [read_result(entry.run_dir) for entry in plan.manifest()]
    if any(r is None for r in records):
        return None
    chosen = write_ranking(plan.directory, [r for r in records if r], plan.val_images, metric)
    return (f"\n{(plan.directory / GRID_TABLE).read_text()}\n"
            f"chosen α = {chosen['alpha']:g}, β = {chosen['beta']:g}, γ = {chosen['gamma']:g} → "
            f"pipeline sweep scale --from-grid {plan.directory} --phi 0..3")


def read_choice(directory: str | Path) -> tuple[float, float, float]:
    """The α, β, γ chosen by the grid sweep in ``directory``."""
    path = Path(directory) / GRID_FILE
    if not path.is_file():
        raise PipelineError(f"{path} not found: run (or finish) `pipeline sweep grid` for that directory first")
    try:
        chosen = json.loads(path.read_text())
        return float(chosen["alpha"]), float(chosen["beta"]), float(chosen["gamma"])
    except (json.JSONDecodeError, KeyError, TypeError, ValueError) as err:
        raise PipelineError(f"{path} is not a grid result ({err}); re-run `pipeline sweep grid`") from None
