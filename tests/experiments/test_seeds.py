"""``--seeds N``: every point as ``<point>-seed<k>`` differing only in its seeds, re-runs that add only the missing
seeds (a plain run of an earlier one-seed sweep is seed 0), the SLURM array of a seeded sweep, transfer of a
seeded sweep beside its source, and refusals of bad counts."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pipeline.cluster.run_manifest import RunEntry, read_manifest
from pipeline.commands import sweep
from pipeline.errors import PipelineError
from pipeline.experiments.plan import PlannedRun, SweepPlan, load_sweep, save_plan, with_seeds
from pipeline.scaling import resolve_spec
from pipeline.training.result import RESULT_KEYS, write_result

REPO = Path(__file__).resolve().parents[2]
CONFIG = str(REPO / "configs" / "experiment" / "digits.yaml")
COMMON = ["--data.root", "shards", "--trainer.max_epochs", "1"]


def plan_of(directory: Path, *names: str, seed: int = 0) -> SweepPlan:
    """A scale plan with one run per name (compound φ = its index), built by hand: no network is counted."""
    runs = []
    for phi, name in enumerate(names):
        spec = resolve_spec(phi=phi, base_resolution=32)
        entry = RunEntry(CONFIG, str(directory / name), ["--model.phi", str(phi), *COMMON])
        runs.append(PlannedRun(name, spec, 10 * 2**phi, 5, 7, 2.0**phi, entry, {}))
    return SweepPlan("scale", directory.name, directory, CONFIG, COMMON, "digits", 1437, 180, 1, 10, runs, seed=seed)


def test_seeds_name_each_run_and_differ_only_in_the_seeds(tmp_path: Path) -> None:
    plan = with_seeds(plan_of(tmp_path / "s", "compound-phi0", "compound-phi1", seed=7), 3)
    assert [r.name for r in plan.runs] == [f"compound-phi{p}-seed{k}" for p in (0, 1) for k in range(3)]
    assert [Path(r.entry.run_dir).name for r in plan.runs] == [r.name for r in plan.runs]
    for k, run in enumerate(plan.runs[:3]):
        assert run.entry.overrides == ["--model.phi", "0", *COMMON, "--seed_everything", str(7 + k),
                                       "--data.seed", str(7 + k)]
        assert run.info == {"seed": 7 + k} and run.spec == plan.runs[0].spec
    one = with_seeds(plan_of(tmp_path / "s", "compound-phi0"), 1)
    assert [(r.name, r.entry.overrides) for r in one.runs] == [("compound-phi0", ["--model.phi", "0", *COMMON])]


@pytest.mark.parametrize("seeds", [0, -2])
def test_a_count_below_one_is_refused(tmp_path: Path, seeds: int) -> None:
    with pytest.raises(PipelineError, match=f"--seeds must be >= 1 \\(got {seeds}\\)"):
        with_seeds(plan_of(tmp_path / "s", "compound-phi0"), seeds)


def test_more_seeds_later_add_only_the_missing_ones(tmp_path: Path) -> None:
    directory = tmp_path / "s"
    save_plan(with_seeds(plan_of(directory, "compound-phi0", "compound-phi1"), 2))
    first = read_manifest(directory / "run_manifest.json")
    runs = save_plan(with_seeds(plan_of(directory, "compound-phi0", "compound-phi1"), 3))
    assert runs[:4] == first  # the array indices of the runs already listed stay
    assert [Path(r.run_dir).name for r in runs[4:]] == ["compound-phi0-seed2", "compound-phi1-seed2"]
    assert [r["seed"] for r in load_sweep(directory)["runs"]] == [0, 1, 0, 1, 2, 2]
    # the same count again plans nothing new; one seed now means seed 0 of the seeded sweep
    assert save_plan(with_seeds(plan_of(directory, "compound-phi0", "compound-phi1"), 3)) == runs
    assert save_plan(with_seeds(plan_of(directory, "compound-phi0", "compound-phi1"), 1)) == runs


def test_a_plain_run_of_a_one_seed_sweep_is_seed_zero(tmp_path: Path) -> None:
    directory = tmp_path / "s"
    plain = save_plan(with_seeds(plan_of(directory, "compound-phi0"), 1))
    runs = save_plan(with_seeds(plan_of(directory, "compound-phi0"), 3))
    assert runs[0] == plain[0] and [Path(r.run_dir).name for r in runs] == [
        "compound-phi0", "compound-phi0-seed1", "compound-phi0-seed2"]
    assert runs[2].overrides[-4:] == ["--seed_everything", "2", "--data.seed", "2"]


@pytest.mark.parametrize("seeds", ["0", "-1", "two"])
def test_bad_seed_counts_are_one_line_and_write_nothing(tmp_path: Path, seeds: str) -> None:
    with pytest.raises(PipelineError, match="--seeds") as err:
        sweep.main(["sweep", "scale", "--phi", "0", "--seeds", seeds, "--", "--run.root", str(tmp_path / "runs")])
    assert "\n" not in str(err.value) and not (tmp_path / "runs").exists()


def test_slurm_array_of_a_seeded_sweep(digits: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["sweep", "scale", "--config", CONFIG, "--name", "s", "--phi", "0", "--seeds", "3", "--submit", "slurm",
            "--slurm-arg=--no-requeue", "--dry-run", "--", "--data.root", str(digits), "--run.root",
            str(tmp_path / "runs")]
    assert sweep.main(argv) == 0
    directory = tmp_path / "runs" / "s"
    runs = read_manifest(directory / "run_manifest.json")
    assert [Path(r.run_dir).name for r in runs] == [f"compound-phi0-seed{k}" for k in range(3)]
    assert [r.overrides[-4:] for r in runs] == [["--seed_everything", str(k), "--data.seed", str(k)] for k in range(3)]
    assert len({tuple(r.overrides[:-4]) for r in runs}) == 1  # the seeds are all that differ
    assert "--array=0-2%4" in capsys.readouterr().out.strip().splitlines()[-1]
    write_result(runs[1].run_dir, {**dict.fromkeys(RESULT_KEYS), "run_name": "compound-phi0-seed1"})
    at = argv.index("--seeds") + 1
    assert sweep.main([*argv[:at], "5", *argv[at + 1:]]) == 0  # 5 seeds: two more, the finished one left out
    assert "--array=0,2-4%4" in capsys.readouterr().out.strip().splitlines()[-1]


def test_transfer_of_a_seeded_sweep_goes_beside_it_one_run_per_source_seed(digits: Path, tmp_path: Path) -> None:
    source = tmp_path / "store" / "scale"
    for k in range(2):
        run = source / f"compound-phi1-seed{k}"
        run.mkdir(parents=True)
        (run / "config.yaml").write_text(json.dumps({"seed_everything": 5 + k, "model": {
            "base": "efficientnet", "base_resolution": 32, "phi": 1.0}}))
        write_result(run, {**dict.fromkeys(RESULT_KEYS), "run_name": run.name, "top1": 0.9})
    transfer_config = str(REPO / "configs" / "transfer" / "cifar100.yaml")
    argv = ["transfer", "--from", str(source), "--dataset", "cifar100", "--config", transfer_config,
            "--data-root", str(digits)]
    own_val = ["--data.val_split", "val"]  # the digits' own val (the config selects on a --holdout minival)
    plan = sweep.make_plan(sweep.build_parser().parse_args(argv), own_val)
    assert plan.directory == tmp_path / "store" / "transfer-cifar100-scale"  # not ./runs
    assert [r.name for r in plan.runs] == ["compound-phi1-cifar100-seed0", "compound-phi1-cifar100-seed1"]
    for k, run in enumerate(plan.runs):
        at = run.entry.overrides.index("--seed_everything")
        assert run.entry.overrides[at:at + 4] == ["--seed_everything", str(5 + k), "--data.seed", str(5 + k)]
    elsewhere = sweep.make_plan(sweep.build_parser().parse_args(argv), [*own_val, "--run.root", str(tmp_path / "runs")])
    assert elsewhere.directory == tmp_path / "runs" / "transfer-cifar100-scale"
    with pytest.raises(PipelineError, match="already has a seed"):
        sweep.make_plan(sweep.build_parser().parse_args([*argv, "--seeds", "2"]), own_val)
