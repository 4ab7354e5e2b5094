"""The report's outputs: report.md, report.html (PNGs embedded) and one W&B run per sweep (group = the sweep) with
a ``wandb.Table`` of the runs, one of the fitted laws (also in the summary) and the plots as images."""

from __future__ import annotations

import base64
import os
from pathlib import Path
from typing import Any

from pipeline.experiments.report import Report, Section
from pipeline.experiments.scaling_fit import StrategyFit
from pipeline.experiments.tables import html_table, markdown_table


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
        body += ["<p>" + escape(s.text).replace("\n", "<br>") + "</p>"] if s.text else []  # the text's lines
        body += [html_table(s.headers, s.rows)] if s.rows else []
        if s.image:
            data = base64.b64encode(s.image.read_bytes()).decode()
            body.append(f'<img alt="{escape(s.title)}" src="data:image/png;base64,{data}">')
    style = ("body{font-family:sans-serif;max-width:1100px;margin:auto}table{border-collapse:collapse}"
             "td,th{border:1px solid #ccc;padding:2px 6px;text-align:right}img{max-width:100%}")
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>{escape(title)}</title><style>{style}</style>"
            f"</head><body>{''.join(body)}</body></html>\n")


WANDB_COLUMNS = ("run_name", "strategy", "phi", "s", "d", "w", "r", "resolution", "params", "flops", "acts",
                 "top1", "top1_low", "top1_high", "top1_ema", "top5", "val_top1", "epoch_time_s", "images_per_s",
                 "fit_time_s", "dataset", "source_run")
FIT_COLUMNS = ("strategy", "cost", "form", "a", "b", "b_low", "b_high", "c", "c_low", "c_high", "runs", "points",
               "replicates", "next_x", "next_error", "next_error_low", "next_error_high")


def fit_parameters(fit: StrategyFit) -> dict[str, Any]:
    """A fit's parameters and intervals as one flat dict under FIT_COLUMNS (the extrapolation's None without one)."""
    e = fit.extrapolation
    return {"strategy": fit.strategy, "cost": fit.cost, "form": fit.law.form, "a": fit.law.a, "b": fit.b.value,
            "b_low": fit.b.low, "b_high": fit.b.high, "c": fit.c.value, "c_low": fit.c.low, "c_high": fit.c.high,
            "runs": fit.runs, "points": fit.points, "replicates": fit.replicates, "next_x": fit.next_x,
            "next_error": e.value if e else None, "next_error_low": e.low if e else None,
            "next_error_high": e.high if e else None}


def log_to_wandb(report: Report, out: Path, project: str) -> list[Path]:
    """One report run per sweep (W&B group = the sweep, job_type report, offline unless $WANDB_MODE): a
    ``wandb.Table`` with a row per run, one with the fitted laws (``fit_parameters``; the laws also in the run's
    summary as ``fit/<strategy>/<cost>/<parameter>``) and the report's plots as images. Re-running resumes the
    same run."""
    import wandb

    from pipeline.training.loggers import wandb_mode
    from pipeline.training.rundir import wandb_run_id

    inherited_service = wandb.env.SERVICE in os.environ  # a service this process was given is left as it was
    images = [s.image for s in report.sections if s.image]
    fits = [fit_parameters(f) for f in report.fits]
    files = []
    for sweep, records in report.per_sweep.items():
        directory = out / "wandb-runs" / sweep
        directory.mkdir(parents=True, exist_ok=True)
        run = wandb.init(project=project, group=sweep, job_type="report", name=f"{sweep}-report", dir=directory,
                         id=wandb_run_id(directory, create=True), resume="allow", mode=wandb_mode(),
                         tags=[f"sweep={sweep}", "report"])
        table = wandb.Table(columns=list(WANDB_COLUMNS), data=[[r.get(c) for c in WANDB_COLUMNS] for r in records])
        logged: dict[str, Any] = {"sweep/runs": table, **{f"report/{p.stem}": wandb.Image(str(p)) for p in images}}
        if fits:
            logged["sweep/fits"] = wandb.Table(columns=list(FIT_COLUMNS), data=[[f[c] for c in FIT_COLUMNS]
                                                                                for f in fits])
        run.log(logged)
        for f in fits:
            run.summary.update({f"fit/{f['strategy']}/{f['cost']}/{k}": f[k] for k in FIT_COLUMNS[3:]
                                if f[k] is not None})
        run.finish()
        files += sorted(directory.glob("wandb/*run-*/run-*.wandb"))
    if not inherited_service:
        # wandb.init exported this process's wandb-core address for its children: a process that reports and then
        # starts jobs (the demo, a notebook, a test session) would hand every job this service, where a requeued
        # job's run id is still "in use"; the service itself stays for this process's next report
        os.environ.pop(wandb.env.SERVICE, None)
    return files
