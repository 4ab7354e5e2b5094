"""``pipeline sweep grid|scale|transfer``: plan a scaling study, then train it locally or as one SLURM job array.

    pipeline sweep grid  --config C [--step 0.1 --low 1 --high 1.4 --target 2 --tolerance 0.1]   α, β, γ at 2× flops
    pipeline sweep scale --config C --phi 0..3 [--alpha … | --from-grid DIR] [--variant b0 b1]
                         [--strategy dwr dWr --scale 1,2,4 --fast-alpha 0.8]
    pipeline sweep transfer --from DIR --dataset cifar100|flowers102 [--data-root PATH]
    every kind: [--seeds N] [--name NAME] [--dry-run] [--submit local|slurm]

Every kind becomes the same run manifest (``<root>/<sweep>/run_manifest.json``) and ``sweep.json`` (the plan:
specs, complexity, the data's image counts). Locally each pending run is one ``pipeline fit`` subprocess,
in order; ``--submit slurm`` hands the manifest to ``pipeline submit --manifest`` (a job array). Re-running
the same command skips runs with a ``result.json`` and resumes the others from ``last.ckpt`` if they have
one; a different plan for an existing sweep directory is refused.

``--seeds N`` trains every point N times, ``<run>-seed<k>`` for k = 0..N−1, differing only in
``--seed_everything`` and ``--data.seed`` (the config's seed + k; the data order follows). N = 1 keeps the plain
run names. Re-running with a larger N adds the missing seeds only; a plain run of an earlier N = 1 sweep counts
as seed 0 of its point (it trained with the config's seed). A transfer sweep writes beside its source sweep
(``<source's run root>/transfer-<dataset>-<source>``) unless ``-- --run.root`` says otherwise, and fine-tunes
every seed of a seeded source as its own run (``…-<dataset>-seed<k>``, with the source's seed).

Flops across strategies are matched by *measured* flops: a strategy at s asks for s × the base net's flops,
but rounding (channels to 8, repeats up, resolution to 4, and at small resolutions the last feature map's
1 → 2 px step) makes the built net cost up to ~2.7× that (dWr at s = 4 from 32 px). So the planner searches,
per strategy point, the s' whose built net's flops are within ``--flops-tolerance`` of s × base (bisection
on log s', ``plan.matched_scale``; the closest found when a rounding step jumps over the target). The run
keeps its asked s in its name (``dWr-s4``) and records ``s_nominal``; its spec's ``s`` is the s' trained.
``--nominal-s`` trains the asked s as is. Compound φ is not matched (φ defines the net); the dry run and
the report show every run's measured factor over the base and its ratio to the nominal one, and the report
plots every run at its measured flops.

A grid candidate (α, β, γ) is a direction too: it is trained at the φ′ whose built net costs ``--target`` × the
base's flops within ``--flops-tolerance`` (the same search on log φ′; the run records φ′ as its ``phi`` and
``phi_nominal`` = 1). Candidates no φ′ matches are left out (the plan says which); candidates that build the
same network are one run, listed under each label.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from pipeline.arguments import OneLineParser, count, number_list
from pipeline.cluster.run_manifest import run_manifest_path
from pipeline.commands import submit
from pipeline.errors import PipelineError
from pipeline.experiments import grid
from pipeline.experiments.plan import SweepPlan, check_finite, cost_lines, plan_sweep, save_plan, with_seeds
from pipeline.experiments.points import grid_points, scale_points, transfer_points
from pipeline.experiments.runner import plan_table, run_locally
from pipeline.scaling import STRATEGIES, VARIANTS
from pipeline.scaling.fast import DEFAULT_FAST_ALPHA

DEFAULT_CONFIG = "configs/experiment/digits.yaml"
TRANSFER_DATASETS = ("cifar100", "flowers102")


def _common(p: argparse.ArgumentParser, config_default: str | None) -> None:
    p.add_argument("--config", default=config_default,
                   help=f"training config of every run (default {config_default})" if config_default else
                   "training config (default configs/transfer/<dataset>.yaml)")
    p.add_argument("--name", help="sweep name: its directory is <run.root>/<name> and its W&B group")
    p.add_argument("--seeds", type=count, default=1, metavar="N",
                   help="runs per point, seeds k = 0..N-1 named <run>-seed<k> (default 1: plain names); a larger N "
                   "on an existing sweep adds the missing seeds")
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
    g.add_argument("--max-candidates", type=int, help="only N candidates, spread over the α, β, γ box "
                   "(farthest-point, from the paper's 1.2, 1.1, 1.15)")
    g.add_argument("--flops-tolerance", type=float, default=0.05,
                   help="match each candidate's measured flops to target × the base's within this (default 0.05)")
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


def make_plan(args: argparse.Namespace, extra: list[str]) -> SweepPlan:
    """Turn the arguments into a sweep plan, every point repeated over ``--seeds`` (every check runs here,
    before anything is written)."""
    return with_seeds(plan_points(args, extra), args.seeds)


def plan_points(args: argparse.Namespace, extra: list[str]) -> SweepPlan:
    """The sweep plan of the kind's points, one run each."""
    if args.images_per_s is not None:
        check_finite("--images-per-s", args.images_per_s)
    if args.max_parallel < 1:
        raise PipelineError(f"--max-parallel must be >= 1 (got {args.max_parallel})")
    if args.kind == "grid":
        check_finite("--flops-tolerance", args.flops_tolerance)
        points = grid_points(args.target, args.tolerance, args.low, args.high, args.step, args.max_candidates)
        plan = plan_sweep("grid", args.name or "grid", args.config, extra, points, args.flops_tolerance)
        return grid.one_run_per_network(plan, args.flops_tolerance)
    if args.kind == "scale":
        check_finite("--flops-tolerance", args.flops_tolerance)
        coefficients = {k: getattr(args, k) for k in ("alpha", "beta", "gamma") if getattr(args, k) is not None}
        points = scale_points(args.phi, coefficients, args.from_grid, args.variant, args.strategy, args.scale,
                              args.fast_alpha, match_flops=not args.nominal_s)
        return plan_sweep("scale", args.name or "scale", args.config, extra, points, args.flops_tolerance)
    config = args.config or str(Path("configs") / "transfer" / f"{args.dataset}.yaml")
    source = args.source.resolve()
    name = args.name or f"transfer-{args.dataset}-{source.name}"
    # beside the source sweep (its run root) unless the overrides give a run root
    root = [] if any(a.split("=", 1)[0] == "--run.root" for a in extra) else ["--run.root", str(source.parent)]
    overrides = ["--run.dataset", args.dataset, *(["--data.root", args.data_root] if args.data_root else []),
                 *root, *extra]
    return plan_sweep("transfer", name, config, overrides, transfer_points(args.source))


def finish(plan: SweepPlan, metric: str) -> None:
    """Print the grid's ranking and chosen α, β, γ once every candidate has finished (``grid.finish_grid``)."""
    summary = grid.finish_grid(plan, metric)
    if summary is not None:
        print(summary)


def submit_slurm(manifest: Path, max_parallel: int, slurm_args: list[str], dry_run: bool) -> int:
    """Hand the manifest to ``pipeline submit --manifest`` (checks, then one sbatch job array of pending runs);
    ``slurm_args`` are further ``pipeline submit`` options, ``dry_run`` prints the sbatch line instead."""
    argv = ["submit", "--manifest", str(manifest), "--max-parallel", str(max_parallel), *slurm_args]
    return submit.main(argv + (["--dry-run"] if dry_run else []))


def main(argv: list[str]) -> int:
    """Run ``pipeline sweep``; ``argv[0]`` is the command name."""
    rest = argv[1:]
    cut = rest.index("--") if "--" in rest else len(rest)
    args = build_parser().parse_args(rest[:cut])
    plan = make_plan(args, rest[cut + 1:])
    print(f"sweep {plan.name} ({plan.kind}): {plan.directory}   data {plan.dataset}: "
          f"{plan.train_images} train / {plan.val_images} val images, {plan.epochs} epochs")
    print(plan_table(plan))
    for note in plan.notes:
        print(note)
    for line in cost_lines(plan, args.images_per_s):
        print(line)
    if args.dry_run and args.submit == "local":
        return 0
    runs = save_plan(plan)
    if args.submit == "slurm":
        status = submit_slurm(run_manifest_path(plan.directory), args.max_parallel, args.slurm_arg, args.dry_run)
        if plan.kind == "grid":
            finish(plan, args.metric)  # once the array has finished: re-running the command ranks
        return status
    failed = run_locally(runs, plan.directory / "logs")
    if failed:
        print(f"pipeline sweep: {len(failed)} of {len(runs)} runs failed ({', '.join(failed)}); "
              "run the same command again to retry them", file=sys.stderr)
        return 1
    if plan.kind == "grid":
        finish(plan, args.metric)
    print(f"\nall {len(runs)} runs done: pipeline report {plan.directory}")
    return 0

