"""``pipeline report <sweep dirs…>``: report.md + report.html (PNGs embedded) comparing the sweeps' runs.

The sections are ``pipeline.experiments.report``'s, their rendering ``report_output``'s; this module parses the
arguments, writes the two files and logs the report's W&B runs.
"""

from __future__ import annotations

from pathlib import Path

from pipeline.arguments import OneLineParser
from pipeline.atomic import atomic_write_text
from pipeline.errors import PipelineError
from pipeline.experiments.plan import load_sweep
from pipeline.experiments.report import build_sections
from pipeline.experiments.report_output import log_to_wandb, render_html, render_markdown
from pipeline.experiments.scaling_fit import REPLICATES


def main(argv: list[str]) -> int:
    """``pipeline report DIR… [--out DIR] [--title T] [--no-wandb] [--bootstrap N]``."""
    from pipeline.training.rundir import RunOptions

    p = OneLineParser(prog="pipeline report", description=__doc__.split("\n\n")[0])
    p.add_argument("sweeps", nargs="+", type=Path, help="sweep directories (pipeline sweep writes them)")
    p.add_argument("--out", type=Path, help="report directory (default <first sweep>/report)")
    p.add_argument("--title", help="report title (default: the sweeps' names)")
    p.add_argument("--project", default=RunOptions.project, help=f"W&B project (default {RunOptions.project})")
    p.add_argument("--no-wandb", action="store_true", help="do not log the report to W&B")
    p.add_argument("--bootstrap", type=int, default=REPLICATES, metavar="N",
                   help=f"bootstrap refits per scaling-law fit (default {REPLICATES})")
    args = p.parse_args(argv[1:])
    if args.bootstrap < 1:
        raise PipelineError(f"--bootstrap must be >= 1 (got {args.bootstrap})")
    out = args.out or args.sweeps[0] / "report"
    for directory in args.sweeps:
        load_sweep(directory)  # every directory must be a sweep before anything is written
    out.mkdir(parents=True, exist_ok=True)
    report = build_sections(args.sweeps, out, args.bootstrap)
    title = args.title or "Scaling report: " + ", ".join(report.per_sweep)
    md = atomic_write_text(out / "report.md", render_markdown(title, report.sections))
    html = atomic_write_text(out / "report.html", render_html(title, report.sections))
    print(render_markdown(title, [s for s in report.sections if s.rows]))
    print(f"report: {md}, {html}")
    if not args.no_wandb:
        files = log_to_wandb(report, out, args.project)
        print(f"W&B report runs: {', '.join(map(str, files))}")
    return 0
