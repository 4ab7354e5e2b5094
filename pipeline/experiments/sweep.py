"""``pipeline sweep grid|scale|transfer``: plan a scaling study, then train it locally or as one SLURM job array.

    pipeline sweep grid  --config C [--step 0.1 --low 1 --high 1.4 --target 2 --tolerance 0.1]   α, β, γ at φ = 1
    pipeline sweep scale --config C --phi 0..3 [--alpha … | --from-grid DIR] [--variant b0 b1]
                         [--strategy dwr dWr --scale 1,2,4 --fast-alpha 0.8]
    pipeline sweep transfer --from DIR --dataset cifar100|flowers102 [--data-root PATH]

Every kind becomes the same run manifest (``<root>/<sweep>/manifest.json``) and ``sweep.json`` (the plan:
specs, complexity, the data's image counts). Locally each pending run is one ``pipeline fit`` subprocess,
in order; ``--submit slurm`` hands the manifest to ``pipeline submit --manifest`` (a job array). Re-running
the same command skips runs with a ``result.json`` and resumes the others from ``last.ckpt`` if they have
one; a different plan for an existing sweep directory is refused.

Flops across strategies are matched by *measured* flops: a strategy at s asks for s × the base net's flops,
but rounding (channels to 8, repeats up, resolution to 4, and at small resolutions the last feature map's
1 → 2 px step) makes the built net cost up to ~2.7× that (dWr at s = 4 from 32 px). So the planner searches,
per strategy point, the s' whose built net's flops are within ``--flops-tolerance`` of s × base (bisection
on log s', ``plan.matched_scale``; the closest found when a rounding step jumps over the target). The run
keeps its asked s in its name (``dWr-s4``) and records ``s_nominal``; its spec's ``s`` is the s' trained.
``--nominal-s`` trains the asked s as is. Compound φ is not matched (φ defines the net); the dry run and
the report show every run's measured factor over the base and its ratio to the nominal one, and the report
plots every run at its measured flops.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from pipeline.arguments import OneLineParser, number_list
from pipeline.atomic import atomic_write_json
from pipeline.cluster.launch import run_dir_overrides
from pipeline.cluster.run_manifest import RunEntry, read_manifest, write_manifest
from pipeline.errors import PipelineError
from pipeline.experiments import grid
from pipeline.experiments.plan import MANIFEST_FILE, SWEEP_FILE, Point, SweepPlan, check_finite, cost_lines, plan_sweep
from pipeline.scaling import STRATEGIES, VARIANTS, grid_candidates
from pipeline.scaling.fast import DEFAULT_FAST_ALPHA
from pipeline.scaling.spec import SPEC_KEYS
from pipeline.training.result import read_result

REPO = Path(__file__).resolve().parents[2]
DEFAULT_CONFIG = "configs/experiment/digits.yaml"
TRANSFER_DATASETS = ("cifar100", "flowers102")


def _common(p: argparse.ArgumentParser, config_default: str | None) -> None:
    p.add_argument("--config", default=config_default,
                   help=f"training config of every run (default {config_default})" if config_default else
                   "training config (default configs/transfer/<dataset>.yaml)")
    p.add_argument("--name", help="sweep name: its directory is <run.root>/<name> and its W&B group")
    p.add_argument("--dry-run", action="store_true", help="print every run with flops, params, acts and the cost")
    p.add_argument("--images-per-s", type=float, help="base net's training images/s per GPU, for GPU-hours")
    p.add_argument("--submit", choices=("local", "slurm"), default="local",
                   help="local: pipeline fit per run, in order (default); slurm: one job array")
    p.add_argument("--max-parallel", type=int, default=4, help="SLURM array runs at once (default 4)")
    p.add_argument("--slurm-arg", action="append", default=[], metavar="ARG",
                   help="option for pipeline submit, e.g. --slurm-arg=--gpus-per-node=4 (repeatable)")


def build_parser() -> argparse.ArgumentParser:
    """The ``pipeline sweep`` parser; ``pipeline fit`` overrides for every run follow a ``--``."""
    p = OneLineParser(prog="pipeline sweep", description=__doc__.split("\n\n")[0],
                epilog="after --: pipeline fit overrides for every run, e.g. -- --trainer.max_epochs 3")
    kinds = p.add_subparsers(dest="kind", required=True, parser_class=OneLineParser)
    g = kinds.add_parser("grid", help="α, β, γ grid search at φ = 1 (EfficientNet step 1)")
    _common(g, DEFAULT_CONFIG)
    g.add_argument("--target", type=float, default=2.0, help="α·β²·γ² target (default 2)")
    g.add_argument("--tolerance", type=float, default=0.1, help="|α·β²·γ² − target| at most this (default 0.1)")
    g.add_argument("--low", type=float, default=1.0, help="grid low end (default 1)")
    g.add_argument("--high", type=float, default=1.4, help="grid high end (default 1.4)")
    g.add_argument("--step", type=float, default=0.1, help="grid step (default 0.1)")
    g.add_argument("--max-candidates", type=int, help="only the first N candidates (closest to the target)")
    g.add_argument("--metric", choices=grid.METRICS, default="top1", help="rank by (default top1)")
    s = kinds.add_parser("scale", help="families per strategy: compound φ, variants, Dollár strategies")
    _common(s, DEFAULT_CONFIG)
    s.add_argument("--phi", type=number_list, metavar="LIST", help="compound coefficients φ: 0..3 or 0,1,2")
    for key, sym in (("alpha", "α"), ("beta", "β"), ("gamma", "γ")):
        s.add_argument(f"--{key}", type=float, metavar=sym, help=f"compound {sym} (default the paper's or --from-grid)")
    s.add_argument("--from-grid", type=Path, metavar="DIR", help="take α, β, γ from a finished grid sweep")
    s.add_argument("--variant", nargs="+", metavar="B", help=f"named variants: {' '.join(VARIANTS)}")
    s.add_argument("--strategy", nargs="+", choices=STRATEGIES, metavar="S", help=f"{' '.join(STRATEGIES)}")
    s.add_argument("--scale", type=number_list, metavar="LIST", help="flops factors s for --strategy: 1,2,4")
    s.add_argument("--fast-alpha", type=float, default=DEFAULT_FAST_ALPHA, help="dWr's α (default 0.8)")
    s.add_argument("--flops-tolerance", type=float, default=0.05,
                   help="match each strategy run's measured flops to s × the base's within this (default 0.05)")
    s.add_argument("--nominal-s", action="store_true", help="train at the asked s as is (no flops matching)")
    t = kinds.add_parser("transfer", help="fine-tune every run of a finished sweep on another dataset")
    _common(t, None)
    t.add_argument("--from", dest="source", type=Path, required=True, metavar="DIR", help="finished sweep directory")
    t.add_argument("--dataset", choices=TRANSFER_DATASETS, required=True, help="target dataset")
    t.add_argument("--data-root", help="the target's shard directory (default: the transfer config's)")
    return p


def grid_points(args: argparse.Namespace) -> list[Point]:
    """One φ = 1 point per grid candidate (α, β, γ), named by its coefficients."""
    found = grid_candidates(args.target, args.tolerance, args.low, args.high, args.step)
    if args.max_candidates is not None:
        if args.max_candidates < 1:
            raise PipelineError(f"--max-candidates must be >= 1 (got {args.max_candidates})")
        found = found[: args.max_candidates]
    if not found:
        raise PipelineError(f"no α, β, γ on the grid {args.low:g}..{args.high:g} step {args.step:g} has "
                            f"α·β²·γ² within {args.tolerance:g} of {args.target:g}: widen --tolerance or --high")
    return [Point({"phi": 1, "alpha": a, "beta": b, "gamma": g}, name=f"grid-a{a:g}-b{b:g}-g{g:g}")
            for a, b, g in found]


def scale_points(args: argparse.Namespace) -> list[Point]:
    """The families asked for: compound φ (α, β, γ given, from a grid or the paper's), variants, strategies × s."""
    coefficients = {k: getattr(args, k) for k in ("alpha", "beta", "gamma") if getattr(args, k) is not None}
    if args.from_grid is not None:
        if coefficients:
            raise PipelineError("give --from-grid or --alpha/--beta/--gamma, not both")
        coefficients = dict(zip(("alpha", "beta", "gamma"), grid.read_choice(args.from_grid), strict=True))
    if (coefficients or args.from_grid) and args.phi is None:
        raise PipelineError("--alpha/--beta/--gamma/--from-grid go with --phi")
    if (args.strategy is None) != (args.scale is None):
        raise PipelineError("--strategy and --scale go together: e.g. --strategy dwr dWr --scale 1,2,4")
    points = [Point({"phi": phi, **coefficients}) for phi in args.phi or []]
    points += [Point({"variant": v}) for v in args.variant or []]
    points += [Point({"strategy": st, "scale": s, "fast_alpha": args.fast_alpha}, match_flops=not args.nominal_s)
               for st in args.strategy or [] for s in args.scale or []]
    if not points:
        raise PipelineError("nothing to train: give --phi, --variant and/or --strategy with --scale")
    return points


def transfer_points(source: Path, dataset: str) -> list[Point]:
    """One fine-tuning point per finished run of ``source``: its model spec keys, initialised from its run dir."""
    import yaml

    if not source.is_dir():
        raise PipelineError(f"--from {source}: not a directory (give a sweep directory, e.g. runs/scale)")
    points = []
    for run in sorted(p for p in source.iterdir() if p.is_dir()):
        record = read_result(run)
        if record is None:
            continue
        config_file = run / "config.yaml"
        if not config_file.is_file():
            raise PipelineError(f"{run} has a result.json but no config.yaml: cannot tell its model")
        model = (yaml.safe_load(config_file.read_text()) or {}).get("model") or {}
        points.append(Point(
            {k: model[k] for k in SPEC_KEYS if k in model},
            overrides=("--model.init_from", str(run), "--run.source_run", record["run_name"]),
            info={"source_run": record["run_name"], "source_top1": record.get("top1"),
                  "source_top1_ema": record.get("top1_ema"), "source_sweep": str(source)},
        ))
    if not points:
        raise PipelineError(f"--from {source}: no finished run (no result.json) to fine-tune from")
    return points


def make_plan(args: argparse.Namespace, extra: list[str]) -> SweepPlan:
    """Turn the arguments into a sweep plan (every check runs here, before anything is written)."""
    if args.images_per_s is not None:
        check_finite("--images-per-s", args.images_per_s)
    if args.max_parallel < 1:
        raise PipelineError(f"--max-parallel must be >= 1 (got {args.max_parallel})")
    if args.kind == "grid":
        return plan_sweep("grid", args.name or "grid", args.config, extra, grid_points(args))
    if args.kind == "scale":
        check_finite("--flops-tolerance", args.flops_tolerance)
        return plan_sweep("scale", args.name or "scale", args.config, extra, scale_points(args), args.flops_tolerance)
    config = args.config or str(Path("configs") / "transfer" / f"{args.dataset}.yaml")
    name = args.name or f"transfer-{args.dataset}-{args.source.resolve().name}"
    overrides = ["--run.dataset", args.dataset, *(["--data.root", args.data_root] if args.data_root else []), *extra]
    return plan_sweep("transfer", name, config, overrides, transfer_points(args.source, args.dataset))


def plan_table(plan: SweepPlan) -> str:
    """Every planned run with its spec, complexity, measured vs nominal flops factor, and state."""
    from pipeline.experiments.tables import format_table

    rows = []
    for run in plan.runs:
        record = run.record(plan.base_flops)
        state = "done" if run.entry.finished() else ("resume" if _checkpoint(run.entry) else "todo")
        rows.append({**record, "×flops": record["flops_growth"], "nominal": record["nominal_growth"],
                     "measured/nominal": record["flops_vs_nominal"], "state": state})
    return format_table(rows, ("run_name", "strategy", "d", "w", "resolution", "params", "flops", "acts",
                               "×flops", "nominal", "measured/nominal", "state"))


def _checkpoint(entry: RunEntry) -> Path | None:
    last = Path(entry.run_dir) / "checkpoints" / "last.ckpt"
    return last if last.is_file() else None


def fit_command(entry: RunEntry) -> list[str]:
    """The ``pipeline fit`` command of one manifest entry (as the array launcher builds it, minus srun);
    ``--ckpt_path last`` where a checkpoint exists, so an interrupted run resumes instead of starting over."""
    cmd = [sys.executable, "-m", "pipeline.cli", "fit", "--config", entry.config, *entry.overrides,
           *run_dir_overrides(Path(entry.run_dir))]
    return cmd + (["--ckpt_path", "last"] if _checkpoint(entry) else [])


def run_locally(entries: list[RunEntry], logs: Path) -> list[str]:
    """Train every pending entry in order, one ``pipeline fit`` subprocess each; return the failed run names."""
    logs.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    failed = []
    for i, entry in enumerate(entries, 1):
        name = Path(entry.run_dir).name
        if entry.finished():
            print(f"[{i}/{len(entries)}] {name}: already done (result.json)", flush=True)
            continue
        log = logs / f"{name}.log"
        how = "resuming from last.ckpt" if _checkpoint(entry) else "training"
        print(f"[{i}/{len(entries)}] {name}: {how} … (log {log})", flush=True)
        started = time.perf_counter()
        with log.open("a") as f:
            done = subprocess.run(fit_command(entry), stdout=f, stderr=subprocess.STDOUT, env=env)
        record = read_result(entry.run_dir)
        if done.returncode != 0 or record is None:
            tail = (log.read_text().strip().splitlines() or ["(empty log)"])[-1]
            print(f"[{i}/{len(entries)}] {name}: FAILED (exit {done.returncode}): {tail}", file=sys.stderr, flush=True)
            failed.append(name)
            continue
        print(f"[{i}/{len(entries)}] {name}: top-1 {100 * record['top1']:.1f}% in "
              f"{time.perf_counter() - started:.0f} s", flush=True)
    return failed


def save_plan(plan: SweepPlan) -> list[RunEntry]:
    """Write ``manifest.json`` and ``sweep.json``, adding the plan's runs to those already in the sweep directory.

    A run directory always means one run: an entry whose ``run_dir`` is already listed must be identical
    (config and overrides), else the plan is refused; existing entries keep their place (so SLURM array
    indices stay valid) and new ones are appended. Returns the sweep's whole manifest.
    """
    path, record = plan.directory / MANIFEST_FILE, plan.record()
    runs, planned = [], record["runs"]
    if path.is_file():
        runs = read_manifest(path)
        earlier = load_sweep(plan.directory)
        if earlier["kind"] != plan.kind:
            raise PipelineError(f"{plan.directory} holds a {earlier['kind']} sweep, not {plan.kind}: "
                                "pick another --name")
        known = {run.run_dir: run for run in runs}
        for entry in plan.manifest():
            if entry.run_dir in known and known[entry.run_dir] != entry:
                raise PipelineError(f"{plan.directory} already holds run {Path(entry.run_dir).name} with another "
                                    "config or overrides: pick another --name, or delete that run directory")
        mine = {run["run_dir"] for run in planned}
        planned = [run for run in earlier["runs"] if run["run_dir"] not in mine] + planned
    runs += [entry for entry in plan.manifest() if entry not in runs]
    order = {run.run_dir: i for i, run in enumerate(runs)}
    write_manifest(path, runs)
    planned.sort(key=lambda run: order[run["run_dir"]])
    atomic_write_json(plan.directory / SWEEP_FILE, {**record, "runs": planned})
    return runs


def submit_slurm(manifest: Path, args: argparse.Namespace) -> int:
    """Hand the manifest to ``pipeline submit --manifest`` (checks, then one sbatch job array of pending runs)."""
    from pipeline.cluster import submit

    argv = ["submit", "--manifest", str(manifest), "--max-parallel", str(args.max_parallel), *args.slurm_arg]
    return submit.main(argv + (["--dry-run"] if args.dry_run else []))


def finish_grid(plan: SweepPlan, metric: str) -> None:
    """With every candidate finished, rank them and write the chosen α, β, γ (grid.json, grid.md)."""
    records = [read_result(entry.run_dir) for entry in plan.manifest()]
    if any(r is None for r in records):
        return
    chosen = grid.write_ranking(plan.directory, [r for r in records if r], plan.val_images, metric)
    print(f"\n{(plan.directory / 'grid.md').read_text()}")
    print(f"chosen α = {chosen['alpha']:g}, β = {chosen['beta']:g}, γ = {chosen['gamma']:g} → "
          f"pipeline sweep scale --from-grid {plan.directory} --phi 0..3")


def main(argv: list[str]) -> int:
    """Run ``pipeline sweep``; ``argv[0]`` is the command name."""
    rest = argv[1:]
    cut = rest.index("--") if "--" in rest else len(rest)
    args = build_parser().parse_args(rest[:cut])
    plan = make_plan(args, rest[cut + 1:])
    print(f"sweep {plan.name} ({plan.kind}): {plan.directory}   data {plan.dataset}: "
          f"{plan.train_images} train / {plan.val_images} val images, {plan.epochs} epochs")
    print(plan_table(plan))
    for line in cost_lines(plan, args.images_per_s):
        print(line)
    if args.dry_run and args.submit == "local":
        return 0
    runs = save_plan(plan)
    if args.submit == "slurm":
        status = submit_slurm(plan.directory / MANIFEST_FILE, args)
        if plan.kind == "grid":
            finish_grid(plan, args.metric)  # once the array has finished: re-running the command ranks
        return status
    failed = run_locally(runs, plan.directory / "logs")
    if failed:
        print(f"pipeline sweep: {len(failed)} of {len(runs)} runs failed ({', '.join(failed)}); "
              "run the same command again to retry them", file=sys.stderr)
        return 1
    if plan.kind == "grid":
        finish_grid(plan, args.metric)
    print(f"\nall {len(runs)} runs done: pipeline report {plan.directory}")
    return 0


def load_sweep(directory: str | Path) -> dict[str, Any]:
    """The ``sweep.json`` of a sweep directory (what ``pipeline report`` reads besides the result records)."""
    path = Path(directory) / SWEEP_FILE
    if not path.is_file():
        raise PipelineError(f"{path} not found: {directory} is not a sweep directory (pipeline sweep writes it)")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise PipelineError(f"{path} is not valid JSON ({err}); re-run the sweep command to rewrite it") from None
