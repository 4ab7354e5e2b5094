"""Sweep planning: points in scaling space → runs with their spec, complexity, cost and manifest entry.

Every sweep kind (grid, scale, transfer) ends here: a list of *points* (the model keys that differ per
run, plus any other per-run overrides) on top of one training config. Planning parses that config once
through the training CLI (exactly what ``pipeline fit`` accepts), resolves each point's ``ScaleSpec``
with the same ``resolve_spec``, counts flops / params / acts of the built net (``count_complexity``) and
prices the sweep. The result is a run manifest (``pipeline.cluster.run_manifest``): the one format that the
local runner and the SLURM job array both execute. A plan is kept in its sweep directory as that manifest
and ``sweep.json`` (``save_plan``; read back by ``load_sweep``).
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipeline.atomic import atomic_write_json
from pipeline.cluster.run_manifest import RunEntry, read_manifest, run_manifest_path, write_manifest
from pipeline.errors import PipelineError
from pipeline.experiments.stats import point_name
from pipeline.scaling import ScaleSpec, resolve_spec
from pipeline.scaling.compound import flops_factor
from pipeline.scaling.spec import SPEC_KEYS
from pipeline.training.config import resolve_run
from pipeline.training.rundir import run_name

# The keys that pick how a spec is made: every run sets all of them (null where unused), so a value in the
# sweep's config (e.g. ``model.phi: 0``) never combines with a point's strategy into an ambiguous spec.
MODE_KEYS = ("variant", "phi", "strategy", "scale")

SWEEP_FILE = "sweep.json"


@dataclass(frozen=True)
class Point:
    """One run to plan: its model keys, other per-run overrides, an optional name, and what to record."""

    model: dict[str, Any]
    overrides: tuple[str, ...] = ()
    name: str | None = None
    info: dict[str, Any] = field(default_factory=dict)
    # search the point's s (strategy) or φ (compound) so that its built net's flops ≈ target × the base's, with
    # target the asked s unless given (a grid candidate: a direction (α, β, γ), target 2 = the nominal 2^φ at φ = 1)
    match_flops: bool = False
    target: float | None = None
    suffix: str = ""  # appended to the default run name (a transfer of a seeded source run keeps its -seed<k>)


@dataclass(frozen=True)
class PlannedRun:
    """A planned run: its name, spec, complexity, the factor of flops it was asked for, and its manifest entry."""

    name: str
    spec: ScaleSpec
    flops: int
    params: int
    acts: int
    nominal: float | None  # the flops factor over the base the point asks for (s, or (αβ²γ²)^φ); None for variants
    entry: RunEntry
    info: dict[str, Any]

    def record(self, base_flops: int) -> dict[str, Any]:
        """The run as a flat dict (spec, complexity, measured over nominal flops) for sweep.json and tables."""
        growth = self.flops / base_flops
        return {**self.spec.record(), "run_name": self.name, "run_dir": self.entry.run_dir, "flops": self.flops,
                "params": self.params, "acts": self.acts, "flops_growth": growth, "nominal_growth": self.nominal,
                "flops_vs_nominal": growth / self.nominal if self.nominal else None, **self.info}


@dataclass(frozen=True)
class SweepPlan:
    """A whole sweep: where it lives, what it trains on, its runs, and the base net they are compared with."""

    kind: str
    name: str
    directory: Path
    config: str
    overrides: list[str]
    dataset: str
    train_images: int
    val_images: int
    epochs: int
    base_flops: int
    runs: list[PlannedRun]
    notes: tuple[str, ...] = ()  # what planning left out, and why (a grid candidate no φ′ matches)
    seed: int = 0  # the config's seed_everything: seed k of a point trains with seed + k

    def manifest(self) -> list[RunEntry]:
        """The run manifest entries, in plan order."""
        return [run.entry for run in self.runs]

    def record(self) -> dict[str, Any]:
        """The plan as JSON-able dict (``sweep.json``): what the report needs besides the result records."""
        return {"kind": self.kind, "name": self.name, "config": self.config, "overrides": self.overrides,
                "dataset": self.dataset, "train_images": self.train_images, "val_images": self.val_images,
                "epochs": self.epochs, "base_flops": self.base_flops, "notes": list(self.notes),
                "runs": [run.record(self.base_flops) for run in self.runs]}


def model_overrides(model: dict[str, Any]) -> list[str]:
    """``--model.<key> <value>`` for a point's model keys, with every mode key not given set to null."""
    keys = {**dict.fromkeys(MODE_KEYS), **model}
    return [arg for key, value in keys.items() for arg in (f"--model.{key}", "null" if value is None else f"{value}")]


def nominal_growth(spec: ScaleSpec) -> float | None:
    """The flops factor over the base net that the spec's scaling rule promises (before rounding)."""
    if spec.s is not None:
        return spec.s
    if spec.phi is not None and spec.alpha is not None and spec.beta is not None and spec.gamma is not None:
        return flops_factor(spec.alpha, spec.beta, spec.gamma) ** spec.phi
    return None


def within(flops: float, target: float, tolerance: float) -> bool:
    """Whether ``flops`` lies within relative ``tolerance`` of ``target`` (on a log scale: ×/÷ (1 + tolerance))."""
    return abs(math.log(flops / target)) <= math.log1p(tolerance)


def matched_scale(spec_at: Callable[[float], ScaleSpec], s: float, target_flops: float,
                  flops_of: Callable[[ScaleSpec], int], tolerance: float, steps: int = 8) -> float:
    """The value (4 significant digits) of a scaling knob, s of a strategy or φ of a compound direction, whose
    built net ``spec_at(value)`` has ``flops_of`` closest to ``target_flops``; the search starts at ``s``.

    Measured flops are a non-decreasing step function of the knob (every rounding rule is monotone), so a
    bisection on its log over [s/4, 4s] brackets the target; it stops once within ``tolerance`` (relative) and
    returns the closest value it counted, which is farther than ``tolerance`` when a rounding step jumps over
    the target.
    """

    def distance(flops: float) -> float:
        return abs(math.log(flops / target_flops))

    low, high = s / 4, s * 4
    best_s, best = s, flops_of(spec_at(s))
    for _ in range(steps):
        if within(best, target_flops, tolerance):
            break
        mid = float(f"{math.sqrt(low * high):.4g}")
        flops = flops_of(spec_at(mid))
        if distance(flops) < distance(best):
            best_s, best = mid, flops
        low, high = (mid, high) if flops < target_flops else (low, mid)
    return best_s


def plan_sweep(kind: str, name: str, config: str, overrides: list[str], points: list[Point],
               tolerance: float = 0.05) -> SweepPlan:
    """Plan ``points`` on ``config`` + ``overrides`` as sweep ``name`` (its directory is ``<run.root>/<name>``).

    Points with ``match_flops`` get the s (strategy) or φ (compound) whose built net's flops are within
    ``tolerance`` of ``target`` (default the asked s) × the base net's, or the closest found (``matched_scale``);
    their run keeps its name and records the asked value (``s_nominal`` / ``phi_nominal``) beside the
    trained one in its spec.

    Raises PipelineError (one line) for a config the training CLI rejects, a point ``resolve_spec`` rejects,
    missing shards, or two points that would share a run directory.
    """
    from pipeline.data.shard_manifest import load_manifest

    if not points:
        raise PipelineError(f"sweep {name!r} has no runs: give at least one point")
    if not name or "/" in name or name in (".", ".."):
        raise PipelineError(f"sweep name must be a plain directory name (got {name!r})")
    # resolved as its first run: a transfer config names no network (its points, the source runs, do)
    first = points[0].model
    resolved = resolve_run(config, [*model_overrides(first), *overrides, "--run.sweep", name])
    model, data, trainer, run = (resolved.config[k] for k in ("model", "data", "trainer", "run"))
    shards = load_manifest(data["root"])
    splits = {split: data.get(f"{split}_split") for split in ("train", "val")}
    for split, key in splits.items():
        if key is None or key not in shards.splits:
            raise PipelineError(f"{data['root']} has no {split} split {key!r}; a sweep trains and validates")
    epochs = trainer.get("max_epochs")
    if not isinstance(epochs, int) or epochs < 1:
        raise PipelineError(f"set trainer.max_epochs (got {epochs!r}): a sweep's cost and schedule need it")
    directory = Path(run["root"]) / name
    seed = resolved.config.get("seed_everything")
    seed = seed if isinstance(seed, int) and not isinstance(seed, bool) else 0  # True: random; seeds need numbers
    common = {k: model[k] for k in SPEC_KEYS if k not in first}  # the config's keys that no point sets
    specs = []
    for point in points:
        unknown = set(point.model) - set(SPEC_KEYS)
        if unknown:
            raise PipelineError(f"not a model spec key: {', '.join(sorted(unknown))}")
        specs.append(resolve_spec(**{**common, **dict.fromkeys(MODE_KEYS), **point.model}))
    names = [point.name or run_name(spec, run.get("dataset")) + point.suffix
             for point, spec in zip(points, specs, strict=True)]
    base_spec = resolve_spec(base=model["base"], phi=0, base_resolution=model["base_resolution"])
    from pipeline.models.complexity import CostCounter  # here: torch only when planning, not for --help

    counter = CostCounter(shards.num_classes)
    base = counter(base_spec)
    models = []
    for i, point in enumerate(points):
        model, info = dict(point.model), dict(point.info)
        knob = "scale" if specs[i].s is not None else "phi"
        asked = specs[i].s if knob == "scale" else specs[i].phi
        target = asked if point.target is None else point.target
        if point.match_flops and asked is not None and target != 1:

            def spec_at(value: float, model: dict[str, Any] = model, knob: str = knob) -> ScaleSpec:
                return resolve_spec(**{**common, **dict.fromkeys(MODE_KEYS), **model, knob: value})

            model[knob] = matched_scale(spec_at, asked, target * base.flops, counter.flops, tolerance)
            specs[i] = spec_at(model[knob])
            info["s_nominal" if knob == "scale" else "phi_nominal"] = asked
            if point.target is not None:
                info["target_growth"] = target
        models.append((model, info))
    runs = []
    for point, label, spec, (model, info) in zip(points, names, specs, models, strict=True):
        entry = RunEntry(config=config, run_dir=str(directory / label),
                         overrides=[*model_overrides(model), *point.overrides, *overrides])
        nominal = info.get("target_growth", info.get("s_nominal", nominal_growth(spec)))
        cost = counter(spec)
        runs.append(PlannedRun(label, spec, cost.flops, cost.params, cost.acts, nominal, entry, info))
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise PipelineError(f"two points of sweep {name!r} are the same run: {', '.join(twice)}")
    return SweepPlan(kind, name, directory, config, list(overrides), Path(str(data["root"])).name,
                     shards.splits[splits["train"]].count, shards.splits[splits["val"]].count, epochs, base.flops,
                     runs, seed=seed)


def seed_overrides(seed: int) -> list[str]:
    """The overrides of one seed: Lightning's ``seed_everything`` and the data module's seed (shard order,
    shuffle, augmentation), so that a point's seeds differ in both."""
    return ["--seed_everything", str(seed), "--data.seed", str(seed)]


def seed_name(point: str, k: int) -> str:
    """Run name of seed ``k`` of ``point``: ``<point>-seed<k>`` (``stats.point_name`` takes the suffix off)."""
    return f"{point}-seed{k}"


def with_seeds(plan: SweepPlan, seeds: int) -> SweepPlan:
    """``plan`` with every run repeated for seeds k = 0..seeds−1 (``plan.seed`` + k), named ``<run>-seed<k>``
    and differing only in ``seed_overrides``.

    One seed keeps plain run names and no seed override (a sweep from before seeds stays valid). The runs the
    sweep directory already lists decide seed 0's form, so that re-running with another ``seeds`` only adds runs:
    a plain run listed there is seed 0 of its point (it trained with the config's seed, ``plan.seed``), and
    with one seed a listed ``<run>-seed0`` is kept. PipelineError for ``seeds`` < 1 or runs already seeded.
    """
    if seeds < 1:
        raise PipelineError(f"--seeds must be >= 1 (got {seeds})")
    path = run_manifest_path(plan.directory)
    listed = {Path(entry.run_dir).name for entry in read_manifest(path)} if path.is_file() else set()
    runs = []
    for run in plan.runs:
        if seeds > 1 and run.name != point_name(run.name):
            raise PipelineError(f"run {run.name} already has a seed (a transfer of a seeded sweep trains one run per "
                                "source seed): give --seeds 1")
        plain = run.name in listed if seeds > 1 else seed_name(run.name, 0) not in listed
        runs += [run] if plain else [_seeded(run, 0, plan.seed)]
        runs += [_seeded(run, k, plan.seed) for k in range(1, seeds)]
    return dataclasses.replace(plan, runs=runs)


def _seeded(run: PlannedRun, k: int, base: int) -> PlannedRun:
    name = seed_name(run.name, k)
    entry = RunEntry(run.entry.config, str(Path(run.entry.run_dir).with_name(name)),
                     [*run.entry.overrides, *seed_overrides(base + k)])
    return dataclasses.replace(run, name=name, entry=entry, info={**run.info, "seed": base + k})


def cost_lines(plan: SweepPlan, images_per_s: float | None) -> list[str]:
    """The sweep's total training cost: flops × images × epochs × 3 (forward + backward) and GPU-hours.

    GPU-hours assume ``images_per_s`` for the base net (φ = 0, s = 1) and time ∝ flops for the others
    (Dollár et al. find time follows activations more closely; the report measures it).
    """
    images = plan.train_images * plan.epochs
    total = sum(3 * run.flops * images for run in plan.runs)
    lines = [f"{len(plan.runs)} runs × {plan.train_images} images × {plan.epochs} epochs: "
             f"{total:.3g} flops (multiply-adds, ×3 for forward + backward)"]
    if images_per_s:
        hours = sum(images * run.flops / plan.base_flops / images_per_s for run in plan.runs) / 3600
        lines.append(f"≈ {hours:.3g} GPU-hours at {images_per_s:g} images/s for the base net (time ∝ flops)")
    return lines


def check_finite(name: str, value: float) -> float:
    """A finite positive number, or a one-line error naming the option."""
    if not (math.isfinite(value) and value > 0):
        raise PipelineError(f"{name} must be a positive number (got {value})")
    return value


def save_plan(plan: SweepPlan) -> list[RunEntry]:
    """Write the run manifest (``run_manifest_path``) and ``sweep.json``, adding the plan's runs to those already
    in the sweep directory.

    A run directory always means one run: an entry whose ``run_dir`` is already listed must be identical
    (config and overrides), else the plan is refused; existing entries keep their place (so SLURM array
    indices stay valid) and new ones are appended. Returns the sweep's whole manifest.
    """
    path, record = run_manifest_path(plan.directory), plan.record()
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


def load_sweep(directory: str | Path) -> dict[str, Any]:
    """The ``sweep.json`` of a sweep directory (what ``pipeline report`` reads besides the result records)."""
    path = Path(directory) / SWEEP_FILE
    if not path.is_file():
        raise PipelineError(f"{path} not found: {directory} is not a sweep directory (pipeline sweep writes it)")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise PipelineError(f"{path} is not valid JSON ({err}); re-run the sweep command to rewrite it") from None
