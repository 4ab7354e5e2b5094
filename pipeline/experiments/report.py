"""The sweeps' report (``pipeline report``): its sections, built from result records (``report_output`` renders
them as report.md and report.html and logs the W&B runs).

Sections: the runs (top-1 with its 95 % Wilson interval on the reported split's count, cost, time); the points
over their seeds (mean ± s.d. beside one run's interval) when a sweep has seeds; top-1 over flops, params and
activations per strategy (EfficientNet Fig. 1/8); scaling-law fits of top-1 error over flops and over epoch time
per strategy with bootstrap bands, crossings, separation and the extrapolation to the next φ; epoch time over
flops, params and activations with Pearson r and its interval per group of comparable runs (Dollár et al.'s
runtime figure); growth exponents of params and activations over flops per strategy with standard errors beside
the theory; the grid ranking of a grid sweep; transfer top-1 over flops per dataset beside the source accuracy.
Every number comes from the runs' result records and the sweep's plan (``sweep.json``: the validation count,
kind); the statistics are ``stats``' and ``scaling_fit``'s.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipeline.errors import PipelineError
from pipeline.experiments import grid
from pipeline.experiments.plan import load_sweep
from pipeline.experiments.plots import COSTS, plot_panels
from pipeline.experiments.scaling_fit import (
    FIT_HEADERS,
    REPLICATES,
    StrategyFit,
    compare,
    comparison_lines,
    fit_records,
    fit_rows,
    plot_fits,
)
from pipeline.experiments.stats import (
    COMPARABLE_KEYS,
    accuracy_interval,
    first_runs,
    growth_fit,
    runtime_correlations,
    summarise_points,
    theory_exponents,
)
from pipeline.scaling import STRATEGIES, strategy_exponents
from pipeline.training.result import read_result

FIT_COSTS = ("flops", "epoch_time_s")  # the scaling-law fits' compute axes


@dataclass
class Section:
    """One part of the report: a heading, text, a table and an image (each optional)."""

    title: str
    text: str = ""
    headers: tuple[str, ...] = ()
    rows: list[list[str]] = field(default_factory=list)
    image: Path | None = None


def eval_images(record: dict[str, Any], plan: dict[str, Any]) -> int:
    """The images a run's reported top-1 was measured on: the record's ``test_images``, else (records from before
    the test split was reported) the plan's validation count."""
    return int(record.get("test_images") or plan["val_images"])


def with_interval(record: dict[str, Any], n: int) -> dict[str, Any]:
    """``record`` with its top-1 in % and the 95 % Wilson interval on ``n`` images (``top1_low``/``top1_high``,
    fractions; ``top1_err_pct``: the distances below and above, for error bars); no interval without a top-1."""
    top1 = record.get("top1")
    low, high = accuracy_interval(top1, n) if top1 is not None else (math.nan, math.nan)
    pct = 100 * (top1 or 0)
    return {**record, "eval_images": n, "top1_pct": pct, "top1_low": low, "top1_high": high,
            "top1_err_pct": (pct - 100 * low, 100 * high - pct)}


def load_records(directory: Path) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """A sweep's plan and its finished runs' records (plan order), each with the sweep's kind, the source's
    top-1, its nominal s and its 95 % Wilson interval (``with_interval``) added."""
    plan = load_sweep(directory)
    records = []
    for planned in plan["runs"]:
        record = read_result(planned["run_dir"])
        if record is None:
            continue
        records.append(with_interval({**record, "sweep_kind": plan["kind"], "val_images": plan["val_images"],
                                      "source_top1": planned.get("source_top1"),
                                      "s_nominal": planned.get("s_nominal")}, eval_images(record, plan)))
    return plan, records


def group_key(record: dict[str, Any], several: bool) -> str:
    """The line a run belongs to: its strategy (prefixed by its sweep when the report covers several)."""
    return f"{record['sweep']}:{record['strategy']}" if several else str(record["strategy"])


def theory(record: dict[str, Any]) -> tuple[float, float] | None:
    """The papers' growth exponents of (params, acts) over flops for the run's scaling rule; None for variants."""
    if record["strategy"] in STRATEGIES:
        return theory_exponents(*strategy_exponents(record["strategy"], record.get("fast_alpha") or 0.8))
    if record["strategy"] == "compound":
        return theory_exponents(*(math.log(record[k]) for k in ("alpha", "beta", "gamma")))
    return None


def _fmt(value: float | None, digits: int = 2) -> str:
    return "-" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.{digits}f}"


def _interval_pct(value: float, low: float, high: float) -> str:
    return f"{100 * value:.1f} [{100 * low:.1f}, {100 * high:.1f}]"


def point_label(record: dict[str, Any]) -> str:
    """φ, or s (``asked→trained`` where flops matching moved it), or ``-`` for a variant."""
    if record.get("phi") is not None:
        return f"φ={record['phi']:g}"
    if record.get("s") is None:
        return "-"
    nominal = record.get("s_nominal")
    return f"s={nominal:g}→{record['s']:.3g}" if nominal not in (None, record["s"]) else f"s={record['s']:g}"


def split_warnings(records: list[dict[str, Any]]) -> list[str]:
    """A warning per sweep whose runs selected (best checkpoint, grid choice) and reported on the same split."""
    same: dict[str, list[str]] = {}
    for r in records:
        if r.get("selected_on") is not None and r.get("selected_on") == r.get("reported_on"):
            same.setdefault(f"{r['sweep']} ({r['selected_on']})", []).append(str(r["run_name"]))
    return [f"warning: selection and report used the same split in {sweep} for {len(runs)} runs "
            f"({', '.join(runs[:3])}{', …' if len(runs) > 3 else ''}): their top-1 is optimistic"
            for sweep, runs in same.items()]


def runs_section(records: list[dict[str, Any]]) -> Section:
    """The headline table: one row per run, top-1 with its 95 % Wilson interval."""
    rows = [[r["sweep"], r["run_name"], r["strategy"], point_label(r),
             str(r["resolution"]), f"{r['params'] / 1e6:.2f}", f"{r['flops'] / 1e6:.1f}", f"{r['acts'] / 1e6:.3f}",
             _fmt(100 * r["val_top1"] if r.get("val_top1") is not None else None, 1),
             _interval_pct(r["top1"], r["top1_low"], r["top1_high"]) if r.get("top1") is not None else "-",
             _fmt(100 * r["top1_ema"] if r.get("top1_ema") else None, 1), _fmt(r.get("epoch_time_s"), 1)]
            for r in records]
    counts = ", ".join(sorted({str(r["eval_images"]) for r in records}))
    splits = ", ".join(sorted({f"selected on {r['selected_on'] or 'nothing: final weights'}, reported on "
                               f"{r['reported_on']}" for r in records
                               if r.get("reported_on")})) or "records from before held-out selection"
    text = "\n\n".join([f"top-1 [its 95 % Wilson interval] of the selected checkpoint ({splits}; evaluation "
                         f"images: {counts}); selection top-1 = its best on the selection split; flops = "
                         "multiply-adds per image.", *split_warnings(records)])
    return Section("Runs", text, ("sweep", "run", "strategy", "φ or s", "res", "params (M)", "flops (M)",
                                  "acts (M)", "selection top-1 (%)", "top-1 (%) [95 %]", "EMA top-1 (%)",
                                  "epoch (s)"), rows)


def point_records(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One record per point of each sweep (its first run's, seeds averaged): top-1 = the mean over its seeds,
    ``top1_sd`` their s.d. (None for one seed), ``seeds`` their number, the interval one run's at the mean."""
    out = []
    sweeps = dict.fromkeys(r["sweep"] for r in records)
    for sweep in sweeps:
        runs = [r for r in records if r["sweep"] == sweep]
        firsts = first_runs(runs)
        n = runs[0]["eval_images"]
        for p in summarise_points(runs, n):
            first = {**firsts[p.point], "run_name": p.point, "top1": p.mean, "top1_sd": p.sd, "seeds": p.seeds}
            out.append(with_interval(first, n))
    return out


def points_section(points: list[dict[str, Any]]) -> Section:
    """Each point's mean top-1 ± s.d. over its seeds beside the 95 % Wilson interval of one run at that mean."""
    rows = [[p["sweep"], p["run_name"], str(p["seeds"]), f"{p['top1_pct']:.1f}",
             _fmt(100 * p["top1_sd"] if p["top1_sd"] is not None else None, 1),
             f"[{100 * p['top1_low']:.1f}, {100 * p['top1_high']:.1f}]"] for p in points]
    return Section("Points over seeds", "Mean top-1 over each point's seeds ± their standard deviation (the "
                   "spread from training), beside one run's 95 % Wilson interval at that accuracy (the spread from "
                   "evaluating on a finite set).",
                   ("sweep", "point", "seeds", "mean top-1 (%)", "s.d. (points)", "one run's 95 % (Wilson)"), rows)


def accuracy_section(lines: dict[str, list[dict[str, Any]]], out: Path) -> Section:
    """Top-1 over flops, params and acts per strategy, with 95 % Wilson error bars (grid candidates unjoined)."""
    grids = [name for name, points in lines.items() if points[0]["sweep_kind"] == "grid"]
    image = plot_panels(lines, COSTS, "top1_pct", "top-1 (%)", out / "accuracy.png", yerr="top1_err_pct",
                        unjoined=grids)
    return Section("Accuracy over cost", "Each point (seeds averaged) at its *measured* flops / params / "
                   "activations; bars: one run's 95 % Wilson interval.", image=image)


def fit_section(records: list[dict[str, Any]], group: Any, out: Path, replicates: int) -> tuple[Section,
                                                                                              list[StrategyFit]]:
    """Per strategy, top-1 error over flops and over epoch time fitted as a power law (``scaling_fit``), every run
    and seed a bootstrap unit; the plot's bands are 95 %, the next φ's point is marked as extrapolated."""
    fits: list[StrategyFit] = []
    for cost in FIT_COSTS:
        fits += fit_records(records, cost, group=group, eval_images=records[0]["eval_images"],
                            replicates=replicates)
    comparisons = [c for i, f in enumerate(fits) for g in fits[i + 1:] if f.cost == g.cost
                   if (c := compare(f, g)) is not None]
    if not fits:
        return Section("Scaling-law fits", "No strategy has runs at two or more compute values: nothing to fit."), []
    # the next φ is a step in flops; an epoch-time fit's next point is only the same ratio on from its largest time
    extrapolated = [f"- {f.strategy} over flops: extrapolated to the next φ (C = {f.next_x:.3g}, beyond the largest "
                    f"measured {f.max_x:.3g}): error {_interval_pct(e.value, e.low, e.high)} % (an extrapolation, not "
                    "a measurement)" for f in fits if f.cost == "flops" and (e := f.extrapolation) is not None]
    text = "\n".join(["Top-1 error = a·C^(−b) + c with four or more distinct C, else a·C^(−b) (log-log line); "
                      f"95 % intervals from {replicates} bootstrap refits over runs and seeds (each accuracy redrawn "
                      "from its binomial).", *comparison_lines(comparisons), *extrapolated])
    image = plot_fits(fits, records, out / "fits.png", group=group)
    return Section("Scaling-law fits", text, FIT_HEADERS, fit_rows(fits), image), fits


def runtime_section(records: list[dict[str, Any]], lines: dict[str, list[dict[str, Any]]], out: Path) -> Section:
    """Epoch time over flops, params and acts, with Pearson r of log time and log cost and its 95 % interval per
    group of comparable runs (same sweep kind, dataset, accelerator, world size)."""
    rows = []
    for key, label in COSTS:
        for group, found in runtime_correlations(records, key).items():
            cells = (["-", "-", str(len([r for r in records if tuple(r.get(k) for k in COMPARABLE_KEYS) == group
                                         and r.get("epoch_time_s")]))] if found is None else
                     [_fmt(found.r, 3), f"[{found.low:.3f}, {found.high:.3f}]", str(found.n)])
            rows.append([label, " / ".join(str(v) for v in group), *cells])
    timed_lines = {k: [r for r in v if r.get("epoch_time_s")] for k, v in lines.items()}
    image = plot_panels(timed_lines, COSTS, "epoch_time_s", "epoch time (s)", out / "runtime.png",
                        unjoined=[name for name, points in lines.items() if points[0]["sweep_kind"] == "grid"])
    return Section("Epoch time over cost", "Pearson r of log epoch time with log cost and its 95 % interval, only "
                   "within groups of comparable runs (sweep kind / dataset / accelerator / world size; Dollár et al.: "
                   "time follows activations best); fewer than three timed runs give no r. Times are wall-clock on "
                   "the machine that trained each run.",
                   ("cost", "group", "Pearson r", "95 %", "runs"), rows, image)


def growth_section(lines: dict[str, list[dict[str, Any]]], points: list[dict[str, Any]]) -> Section:
    """Fitted exponents k ± their standard error of params ∝ flops^k and acts ∝ flops^k per strategy (``lines`` and
    ``points`` one record per point, ``point_records``; the base net of the sweep added) vs theory."""
    bases = [r for r in points if r["d"] == 1 and r["w"] == 1 and r["r"] == 1]
    rows = []
    for name, points in lines.items():
        same_sweep = [b for b in bases if b["sweep"] == points[0]["sweep"] and b["run_name"] not in
                      {p["run_name"] for p in points}]
        fit = points + same_sweep[:1]
        expected = theory(points[0])
        cells = []
        for i, key in enumerate(("params", "acts")):
            found = growth_fit([r["flops"] for r in fit], [r[key] for r in fit])
            cells += ["-" if found is None else f"{found.k:.2f}" + ("" if found.se is None else f" ± {found.se:.2f}"),
                      _fmt(expected[i] if expected else None)]
        rows.append([name, str(len(fit)), *cells])
    return Section("Growth of params and activations with flops",
                   "Least-squares slope of log params and log acts over log flops per strategy (one run per point plus "
                   "the base net of its sweep) ± its standard error (scipy's linregress; none with two points); theory "
                   "from the scaling exponents (Dollár et al. Table 1: w 1, ½; d 1, 1; r 0, 1; dwr ⅔, ⅚; dWr(0.8) 0.9, "
                   "0.6; compound from log α, β, γ). Rounding of channels, repeats and small resolutions moves the "
                   "measured values.",
                   ("strategy", "points", "params k ± se", "theory", "acts k ± se", "theory"), rows)


def transfer_lines(records: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    """Transfer runs grouped by target dataset."""
    datasets = sorted({str(r["dataset"]) for r in records})
    return {f"transfer → {d}": [r for r in records if r["dataset"] == d] for d in datasets}


def transfer_section(records: list[dict[str, Any]], out: Path) -> Section:
    """Transfer top-1 (95 % Wilson interval) over flops per dataset, beside the source runs' top-1."""
    lines = transfer_lines(records)
    sources = [{**r, "top1_pct": 100 * r["source_top1"]} for r in records if r.get("source_top1") is not None]
    image = plot_panels(lines, COSTS[:1], "top1_pct", "top-1 (%)", out / "transfer.png", yerr="top1_err_pct",
                        reference={"source": sources} if sources else None)
    rows = [[r["dataset"], r["source_run"] or "-", f"{r['flops'] / 1e6:.1f}",
             _interval_pct(r["top1"], r["top1_low"], r["top1_high"]),
             _fmt(100 * r["source_top1"] if r.get("source_top1") is not None else None, 1)] for r in records]
    return Section("Transfer", "Fine-tuned top-1 [95 % Wilson interval] per source run (dashed: the source's own "
                   "top-1).", ("dataset", "source run", "flops (M)", "transfer top-1 (%) [95 %]", "source top-1 (%)"),
                   rows, image)


@dataclass
class Report:
    """The report's sections, each sweep's records and the scaling-law fits (the last two for W&B)."""

    sections: list[Section]
    per_sweep: dict[str, list[dict[str, Any]]]
    fits: list[StrategyFit]


def build_sections(directories: list[Path], out: Path, replicates: int = REPLICATES) -> Report:
    """Every section of the report (``replicates`` bootstrap refits per scaling-law fit)."""
    per_sweep: dict[str, list[dict[str, Any]]] = {}
    plans = []
    for directory in directories:
        plan, records = load_records(directory)
        plans.append(plan)
        per_sweep[plan["name"]] = records
    records = [r for rs in per_sweep.values() for r in rs]
    if not records:
        raise PipelineError(f"no finished run (result.json) in {', '.join(map(str, directories))}: nothing to report")
    several = len(per_sweep) > 1

    def group(record: dict[str, Any]) -> str:
        return group_key(record, several)

    scaling = [r for r in records if r["sweep_kind"] != "transfer"]
    points = point_records(records)
    lines: dict[str, list[dict[str, Any]]] = {}
    for p in points:
        if p["sweep_kind"] != "transfer":
            lines.setdefault(group(p), []).append(p)
    sections = [runs_section(records)]
    sections += [points_section(points)] if any(p["seeds"] > 1 for p in points) else []
    fits: list[StrategyFit] = []
    if scaling:
        # a grid's candidates all sit at φ = 1 with different α, β, γ: no growth line or law to fit through them
        families = {k: v for k, v in lines.items() if v[0]["sweep_kind"] != "grid"}
        sections.append(accuracy_section(lines, out))
        family_runs = [r for r in scaling if r["sweep_kind"] != "grid"]
        if family_runs:
            fitted, fits = fit_section(family_runs, group, out, replicates)
            sections.append(fitted)
        sections += [growth_section(families, [p for v in lines.values() for p in v])] if families else []
    transfer = [r for r in records if r["sweep_kind"] == "transfer"]
    timed_lines: dict[str, list[dict[str, Any]]] = {}
    for r in scaling:
        timed_lines.setdefault(group(r), []).append(r)
    sections.append(runtime_section(records, {**timed_lines, **transfer_lines(transfer)}, out))
    for plan in plans:
        if plan["kind"] == "grid":
            ranking = grid.rank(per_sweep[plan["name"]], plan["val_images"])
            sections.append(Section(f"Grid ranking ({plan['name']})", f"chosen: α = {ranking[0]['alpha']:g}, "
                                    f"β = {ranking[0]['beta']:g}, γ = {ranking[0]['gamma']:g} (φ = 1, by top-1 on the "
                                    "selection split, seeds averaged; ties within noise → lower flops)",
                                    grid.RANKING_HEADERS, grid.ranking_rows(ranking, "top1")))
    if transfer:
        sections.append(transfer_section(transfer, out))
    return Report(sections, per_sweep, fits)
