"""The sweeps' report (``pipeline report``): its sections, rendered as report.md and report.html (PNGs
embedded), and its W&B runs.

Sections: the runs (accuracy ± 95 % binomial interval from the validation count, cost, time); top-1 over
flops, params and activations per strategy (EfficientNet Fig. 1/8); epoch time over flops, params and
activations with Pearson r (Dollár et al.'s runtime figure); measured growth exponents of params and
activations over flops per strategy beside the theory; the grid ranking of a grid sweep; transfer top-1
over flops per dataset beside the source accuracy. Every number comes from the runs' result records and
the sweep's plan (``sweep.json``: the validation count, kind); the report's W&B run (group = the sweep)
gets one ``wandb.Table`` of the runs and the plots as images.
"""

from __future__ import annotations

import base64
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipeline.errors import PipelineError
from pipeline.experiments import grid
from pipeline.experiments.plan import load_sweep
from pipeline.experiments.plots import COSTS, plot_panels
from pipeline.experiments.stats import Z95, binomial_se, growth_exponent, pearson_r, theory_exponents
from pipeline.experiments.tables import html_table, markdown_table
from pipeline.scaling import STRATEGIES, strategy_exponents
from pipeline.training.result import read_result


@dataclass
class Section:
    """One part of the report: a heading, text, a table and an image (each optional)."""

    title: str
    text: str = ""
    headers: tuple[str, ...] = ()
    rows: list[list[str]] = field(default_factory=list)
    image: Path | None = None


def load_records(directory: Path) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """A sweep's plan and its finished runs' records (plan order), each with the sweep's kind, val count and
    the accuracy's 95 % half-interval (``top1_ci``, fraction) added."""
    plan = load_sweep(directory)
    records = []
    for planned in plan["runs"]:
        record = read_result(planned["run_dir"])
        if record is None:
            continue
        se = binomial_se(record["top1"], plan["val_images"]) if record.get("top1") is not None else math.nan
        records.append({**record, "sweep_kind": plan["kind"], "val_images": plan["val_images"], "top1_ci": Z95 * se,
                        "top1_pct": 100 * (record.get("top1") or 0), "top1_ci_pct": 100 * Z95 * se,
                        "source_top1": planned.get("source_top1"), "s_nominal": planned.get("s_nominal")})
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


def point_label(record: dict[str, Any]) -> str:
    """φ, or s (``asked→trained`` where flops matching moved it), or ``-`` for a variant."""
    if record.get("phi") is not None:
        return f"φ={record['phi']:g}"
    if record.get("s") is None:
        return "-"
    nominal = record.get("s_nominal")
    return f"s={nominal:g}→{record['s']:.3g}" if nominal not in (None, record["s"]) else f"s={record['s']:g}"


def runs_section(records: list[dict[str, Any]]) -> Section:
    """The headline table: one row per run."""
    rows = [[r["sweep"], r["run_name"], r["strategy"], point_label(r),
             str(r["resolution"]), f"{r['params'] / 1e6:.2f}", f"{r['flops'] / 1e6:.1f}", f"{r['acts'] / 1e6:.3f}",
             f"{r['top1_pct']:.1f} ± {r['top1_ci_pct']:.1f}",
             _fmt(100 * r["top1_ema"] if r.get("top1_ema") else None, 1), _fmt(r.get("epoch_time_s"), 1)]
            for r in records]
    return Section("Runs", f"top-1 ± its 95 % binomial interval (validation images: "
                   f"{', '.join(sorted({str(r['val_images']) for r in records}))}); flops = multiply-adds per image.",
                   ("sweep", "run", "strategy", "φ or s", "res", "params (M)", "flops (M)", "acts (M)",
                    "top-1 (%)", "EMA top-1 (%)", "epoch (s)"), rows)


def accuracy_section(lines: dict[str, list[dict[str, Any]]], out: Path) -> Section:
    """Top-1 over flops, params and acts per strategy, with 95 % binomial error bars (grid candidates unjoined)."""
    grids = [name for name, points in lines.items() if points[0]["sweep_kind"] == "grid"]
    image = plot_panels(lines, COSTS, "top1_pct", "top-1 (%)", out / "accuracy.png", yerr="top1_ci_pct",
                        unjoined=grids)
    return Section("Accuracy over cost", "Each point at its *measured* flops / params / activations; bars: 95 % "
                   "binomial interval. Two points differ beyond noise only where their intervals do not overlap.",
                   image=image)


def runtime_section(records: list[dict[str, Any]], lines: dict[str, list[dict[str, Any]]], out: Path) -> Section:
    """Epoch time over flops, params and acts, with Pearson r of each (all runs together)."""
    timed = [r for r in records if r.get("epoch_time_s")]
    rs = {key: pearson_r([r[key] for r in timed], [r["epoch_time_s"] for r in timed]) for key, _ in COSTS}
    timed_lines = {k: [r for r in v if r.get("epoch_time_s")] for k, v in lines.items()}
    image = plot_panels(timed_lines, COSTS, "epoch_time_s", "epoch time (s)", out / "runtime.png",
                        titles=[f"Pearson r = {_fmt(rs[key])}" for key, _ in COSTS],
                        unjoined=[name for name, points in lines.items() if points[0]["sweep_kind"] == "grid"])
    return Section("Epoch time over cost", f"Pearson r of epoch time with each cost over {len(timed)} runs (Dollár et "
                   "al.: time follows activations best). Times are wall-clock on the machine that trained each run.",
                   ("cost", "Pearson r (epoch time)"), [[label, _fmt(rs[key], 3)] for key, label in COSTS], image)


def growth_section(lines: dict[str, list[dict[str, Any]]], records: list[dict[str, Any]]) -> Section:
    """Fitted exponents k of params ∝ flops^k and acts ∝ flops^k per strategy (with the base net) vs theory."""
    bases = [r for r in records if r["d"] == 1 and r["w"] == 1 and r["r"] == 1]
    rows = []
    for name, points in lines.items():
        same_sweep = [b for b in bases if b["sweep"] == points[0]["sweep"] and b not in points]
        fit = points + same_sweep[:1]
        expected = theory(points[0])
        measured = [growth_exponent([r["flops"] for r in fit], [r[key] for r in fit]) for key in ("params", "acts")]
        rows.append([name, str(len(fit)), _fmt(measured[0]), _fmt(expected[0] if expected else None),
                     _fmt(measured[1]), _fmt(expected[1] if expected else None)])
    return Section("Growth of params and activations with flops",
                   "Least-squares slope of log params and log acts over log flops per strategy (its runs plus the "
                   "base net of its sweep); theory from the scaling exponents (Dollár et al. Table 1: w 1, ½; d 1, 1; "
                   "r 0, 1; dwr ⅔, ⅚; dWr(0.8) 0.9, 0.6; compound from log α, β, γ). Rounding of channels, repeats "
                   "and small resolutions moves the measured values.",
                   ("strategy", "runs", "params k", "theory", "acts k", "theory"), rows)


def transfer_lines(records: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    """Transfer runs grouped by target dataset."""
    datasets = sorted({str(r["dataset"]) for r in records})
    return {f"transfer → {d}": [r for r in records if r["dataset"] == d] for d in datasets}


def transfer_section(records: list[dict[str, Any]], out: Path) -> Section:
    """Transfer top-1 over flops per dataset, beside the source runs' top-1."""
    lines = transfer_lines(records)
    sources = [{**r, "top1_pct": 100 * r["source_top1"]} for r in records if r.get("source_top1") is not None]
    image = plot_panels(lines, COSTS[:1], "top1_pct", "top-1 (%)", out / "transfer.png", yerr="top1_ci_pct",
                        reference={"source": sources} if sources else None)
    rows = [[r["dataset"], r["source_run"] or "-", f"{r['flops'] / 1e6:.1f}",
             f"{r['top1_pct']:.1f} ± {r['top1_ci_pct']:.1f}",
             _fmt(100 * r["source_top1"] if r.get("source_top1") is not None else None, 1)] for r in records]
    return Section("Transfer", "Fine-tuned top-1 per source run (dashed: the source's own top-1).",
                   ("dataset", "source run", "flops (M)", "transfer top-1 (%)", "source top-1 (%)"), rows, image)


def build_sections(directories: list[Path], out: Path) -> tuple[list[Section], dict[str, list[dict[str, Any]]]]:
    """Every section of the report, and each sweep's records (for W&B)."""
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
    scaling = [r for r in records if r["sweep_kind"] != "transfer"]
    lines: dict[str, list[dict[str, Any]]] = {}
    for r in scaling:
        lines.setdefault(group_key(r, several), []).append(r)
    sections = [runs_section(records)]
    if scaling:
        # a grid's candidates all sit at φ = 1 with different α, β, γ: no growth line to fit through them
        families = {k: v for k, v in lines.items() if v[0]["sweep_kind"] != "grid"}
        sections.append(accuracy_section(lines, out))
        sections += [growth_section(families, scaling)] if families else []
    transfer = [r for r in records if r["sweep_kind"] == "transfer"]
    sections.append(runtime_section(records, {**lines, **transfer_lines(transfer)}, out))
    for plan in plans:
        if plan["kind"] == "grid":
            ranking = grid.rank(per_sweep[plan["name"]], plan["val_images"])
            sections.append(Section(f"Grid ranking ({plan['name']})", f"chosen: α = {ranking[0]['alpha']:g}, "
                                    f"β = {ranking[0]['beta']:g}, γ = {ranking[0]['gamma']:g} (φ = 1, by top-1; ties → "
                                    "lower flops)", grid.RANKING_HEADERS, grid.ranking_rows(ranking, "top1")))
    if transfer:
        sections.append(transfer_section(transfer, out))
    return sections, per_sweep


def render_markdown(title: str, sections: list[Section]) -> str:
    """report.md: images linked by file name (they sit beside it)."""
    parts = [f"# {title}"]
    for s in sections:
        parts.append(f"## {s.title}")
        parts += [s.text] if s.text else []
        parts += [markdown_table(s.headers, s.rows)] if s.rows else []
        parts += [f"![{s.title}]({s.image.name})"] if s.image else []
    return "\n\n".join(parts) + "\n"


def render_html(title: str, sections: list[Section]) -> str:
    """report.html: one self-contained page, PNGs embedded as data URIs."""
    from html import escape

    body = [f"<h1>{escape(title)}</h1>"]
    for s in sections:
        body.append(f"<h2>{escape(s.title)}</h2>")
        body += [f"<p>{escape(s.text)}</p>"] if s.text else []
        body += [html_table(s.headers, s.rows)] if s.rows else []
        if s.image:
            data = base64.b64encode(s.image.read_bytes()).decode()
            body.append(f'<img alt="{escape(s.title)}" src="data:image/png;base64,{data}">')
    style = ("body{font-family:sans-serif;max-width:1100px;margin:auto}table{border-collapse:collapse}"
             "td,th{border:1px solid #ccc;padding:2px 6px;text-align:right}img{max-width:100%}")
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>{escape(title)}</title><style>{style}</style>"
            f"</head><body>{''.join(body)}</body></html>\n")


WANDB_COLUMNS = ("run_name", "strategy", "phi", "s", "d", "w", "r", "resolution", "params", "flops", "acts",
                 "top1", "top1_ema", "top5", "epoch_time_s", "images_per_s", "fit_time_s", "dataset", "source_run")


def log_to_wandb(per_sweep: dict[str, list[dict[str, Any]]], images: list[Path], out: Path, project: str) -> list[Path]:
    """One report run per sweep (W&B group = the sweep, job_type report, offline unless $WANDB_MODE): a
    ``wandb.Table`` with a row per run and the report's plots as images. Re-running resumes the same run."""
    import wandb

    from pipeline.training.loggers import wandb_mode
    from pipeline.training.rundir import wandb_run_id

    files = []
    for sweep, records in per_sweep.items():
        directory = out / "wandb-runs" / sweep
        directory.mkdir(parents=True, exist_ok=True)
        run = wandb.init(project=project, group=sweep, job_type="report", name=f"{sweep}-report", dir=directory,
                         id=wandb_run_id(directory, create=True), resume="allow", mode=wandb_mode(),
                         tags=[f"sweep={sweep}", "report"])
        table = wandb.Table(columns=list(WANDB_COLUMNS), data=[[r.get(c) for c in WANDB_COLUMNS] for r in records])
        run.log({"sweep/runs": table, **{f"report/{p.stem}": wandb.Image(str(p)) for p in images}})
        run.finish()
        files += sorted(directory.glob("wandb/*run-*/run-*.wandb"))
    return files
