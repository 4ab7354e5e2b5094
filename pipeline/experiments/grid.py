"""The α, β, γ grid search at matched cost, and its outcome: candidates ranked by their top-1 on the selection
(validation) split, averaged over seeds, with its binomial error and spread over seeds.

Each candidate (α, β, γ) is a direction, trained at the φ′ whose built network costs the target × the base's
flops (``plan.plan_sweep`` with ``match_flops``); ``one_run_per_network`` leaves out the candidates no φ′
matches and makes candidates that build the same network one run, listed under each of their labels. The
ranking is written by ``pipeline sweep grid`` once every candidate has a result record (``grid.json`` + ``grid.md`` in
the sweep directory, ``finish_grid``) and read by ``pipeline sweep scale --from-grid`` (``read_choice``).
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

from pipeline.atomic import atomic_write_json, atomic_write_text
from pipeline.errors import PipelineError
from pipeline.experiments.plan import PlannedRun, SweepPlan, within
from pipeline.experiments.stats import accuracy_interval, first_runs, summarise_points, within_noise
from pipeline.experiments.tables import markdown_table
from pipeline.training.result import read_result

GRID_FILE = "grid.json"
GRID_TABLE = "grid.md"
METRICS = ("top1", "top1_ema")


def one_run_per_network(plan: SweepPlan, tolerance: float) -> SweepPlan:
    """The grid ``plan`` with one run per built network, each listing the candidates that asked for it
    (``labels``, in plan order; the run keeps the first one's name), and without the candidates whose closest
    φ′ is not within ``tolerance`` of their target flops (each named in the plan's ``notes``).

    Raises PipelineError when no candidate is left.
    """
    kept: dict[tuple[object, ...], PlannedRun] = {}
    notes = list(plan.notes)
    for run in plan.runs:
        target = run.nominal * plan.base_flops if run.nominal else plan.base_flops
        if not within(run.flops, target, tolerance):
            notes.append(f"{run.name} left out: its closest φ′ = {run.spec.phi:g} builds "
                         f"{run.flops / plan.base_flops:.3g}× the base's flops, not within ±{tolerance:g} of "
                         f"{run.nominal:g}× (a rounding step jumps over it)")
            continue
        key = run.spec.network_key()
        if key in kept:
            first = kept[key]
            kept[key] = dataclasses.replace(first, info={**first.info, "labels": [*first.info["labels"], run.name]})
        else:
            kept[key] = dataclasses.replace(run, info={**run.info, "labels": [run.name]})
    if not kept:
        raise PipelineError(f"no grid candidate builds a network within ±{tolerance:g} of the target flops "
                            "(rounding steps jump over it): raise --flops-tolerance or use a larger resolution")
    return dataclasses.replace(plan, runs=list(kept.values()), notes=tuple(notes))


def selection_value(record: dict[str, Any], metric: str) -> float | None:
    """A run's ``metric`` on the selection split: ``val_<metric>`` (held out from the reported split), else
    ``metric`` itself (records from before the selection split had only that)."""
    value = record.get(f"val_{metric}")
    return record.get(metric) if value is None else value


def rank(records: list[dict[str, Any]], val_images: int, metric: str = "top1") -> list[dict[str, Any]]:
    """Candidates best first by ``metric`` on the selection split (``selection_value``), each point's seeds
    averaged (``stats.summarise_points``: mean, s.d. over seeds, standard error from the binomial error on
    ``val_images`` and the seed spread), and whether it is within the noise of the best (``stats.within_noise``,
    a 95 % two-sided test): those within noise come first, fewest measured flops first (a tie in accuracy goes to
    the cheaper network), then the rest by ``metric``."""
    if metric not in METRICS:
        raise PipelineError(f"rank metric must be one of {', '.join(METRICS)} (got {metric!r})")
    scored = [{**r, metric: selection_value(r, metric)} for r in records]
    firsts = first_runs(scored)
    points = summarise_points(scored, val_images, metric)
    if not points:
        raise PipelineError(f"no grid candidate has a {metric} yet: nothing to rank")
    points.sort(key=lambda p: (-p.mean, firsts[p.point]["flops"]))
    best = points[0]
    ranking = []
    for p in points:
        r = firsts[p.point]
        ranking.append({
            "run_name": p.point, "labels": r.get("labels", [r["run_name"]]), "alpha": r["alpha"], "beta": r["beta"],
            "gamma": r["gamma"], "phi": r.get("phi"), "flops": r["flops"], "params": r["params"], "acts": r["acts"],
            "resolution": r["resolution"], metric: p.mean, "sd": p.sd, "seeds": p.seeds, "se": p.se,
            "interval": accuracy_interval(p.mean, val_images), "within_noise_of_best": within_noise(best, p),
        })
    ranking.sort(key=lambda r: (not r["within_noise_of_best"], r["flops"] if r["within_noise_of_best"] else 0))
    return [{"rank": place, **r} for place, r in enumerate(ranking, 1)]


RANKING_HEADERS = ("rank", "α", "β", "γ", "αβ²γ²", "φ′", "res", "flops (M)", "params (M)", "top-1 (%) ± s.d.",
                   "seeds", "one run's 95 % (Wilson)", "within noise of best", "labels")


def ranking_rows(ranking: list[dict[str, Any]], metric: str) -> list[list[str]]:
    """The ranking's table cells (the mean over seeds ± their s.d., one run's 95 % Wilson interval at that
    accuracy, measured flops), under RANKING_HEADERS."""
    return [[str(r["rank"]), f"{r['alpha']:g}", f"{r['beta']:g}", f"{r['gamma']:g}",
             f"{r['alpha'] * r['beta'] ** 2 * r['gamma'] ** 2:.3f}", "-" if r["phi"] is None else f"{r['phi']:.4g}",
             str(r["resolution"]), f"{r['flops'] / 1e6:.2f}", f"{r['params'] / 1e6:.2f}",
             f"{100 * r[metric]:.1f}" + ("" if r["sd"] is None else f" ± {100 * r['sd']:.1f}"), str(r["seeds"]),
             f"[{100 * r['interval'][0]:.1f}, {100 * r['interval'][1]:.1f}]",
             "yes" if r["within_noise_of_best"] else "no", ", ".join(r["labels"])] for r in ranking]


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
    records = [read_result(run.entry.run_dir) for run in plan.runs]
    if any(r is None for r in records):
        return None  # every seed of every candidate: a mean over the seeds that happen to be done would move
    labelled = [{**r, "labels": run.info.get("labels", [run.name])}
                for run, r in zip(plan.runs, records, strict=True) if r]
    chosen = write_ranking(plan.directory, labelled, plan.val_images, metric)
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
