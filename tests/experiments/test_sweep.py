"""Sweep planning on the real digits shards and the real training CLI's parser: grid, scale (with flops matching),
transfer, the manifest a SLURM sweep submits, resumable re-plans, and one-line refusals of bad input."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from pipeline.cluster.run_manifest import read_manifest
from pipeline.commands import sweep
from pipeline.errors import PipelineError
from pipeline.experiments.plan import Point, load_sweep, plan_sweep, save_plan
from pipeline.training.result import RESULT_KEYS, write_result

REPO = Path(__file__).resolve().parents[2]
CONFIG = str(REPO / "configs" / "experiment" / "digits.yaml")


def where(digits: Path, tmp_path: Path) -> list[str]:
    """Overrides that put the shards and the runs in this test's directories."""
    return ["--", "--data.root", str(digits), "--run.root", str(tmp_path / "runs")]


@pytest.mark.slow  # counts several nets (~3 s each) and parses configs
def test_grid_dry_run_prints_matched_candidates_and_cost_and_writes_nothing(
        digits: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["sweep", "grid", "--config", CONFIG, "--dry-run", "--images-per-s", "100"]
    assert sweep.main([*argv, *where(digits, tmp_path)]) == 0
    out = capsys.readouterr().out
    rows = [line.split() for line in out.splitlines() if line.lstrip().startswith("grid-") and "left out" not in line]
    # at 32 px the last feature map is 1 px: 32 → 36 px makes it 2 px and the net ~2.5× dearer, and TF's ceil
    # adds a block per stage at any α > 1 (1.5×), so only three directions reach 2× within 5 %
    assert [r[0] for r in rows] == ["grid-a1.4-b1.2-g1", "grid-a1.2-b1.3-g1", "grid-a1-b1.4-g1"]
    assert rows[0][-1] == "grid-a1.4-b1.2-g1,grid-a1.1-b1.2-g1.1,grid-a1.2-b1.2-g1.1"  # one net, three labels
    assert all(r[7] == "32" and r[-2] == "todo" and abs(float(r[11]) / 2 - 1) <= 0.05 for r in rows)
    left_out = [line.split()[0] for line in out.splitlines() if " left out: " in line]
    assert len(left_out) == 16 - 5 and "grid-a1.2-b1.1-g1.15" in left_out  # the paper's: 1.6× below 36 px, 4× at it
    assert "grid-a1.2-b1.1-g1.15 left out: its closest φ′ = 0.4205 builds 1.6× the base's flops" in out
    flops = [float(r[9].rstrip("M")) * 1e6 for r in rows]
    images = 1437 * 3  # digits' train split × configs/experiment/digits.yaml's epochs
    assert f"{sum(3 * f * images for f in flops):.3g} flops" in out
    assert "GPU-hours at 100 images/s" in out
    assert not (tmp_path / "runs").exists()


@pytest.mark.slow  # counts 14 nets at 224 px (~3 s each)
def test_grid_at_224px_trains_each_direction_at_matched_flops_once(digits: Path, tmp_path: Path) -> None:
    args = sweep.build_parser().parse_args(["grid", "--config", CONFIG])
    plan = sweep.make_plan(args, ["--data.root", str(digits), "--run.root", str(tmp_path), "--model.base_resolution",
                                  "224"])
    # every run's built net (counted by build + count_complexity) costs 2× the base's within 5 %
    assert all(abs(math.log(run.flops / (2 * plan.base_flops))) <= math.log(1.05) for run in plan.runs)
    shapes = [(run.spec.stages(), run.spec.resolution) for run in plan.runs]
    assert len(set(shapes)) == len(shapes) and len({(r.flops, r.params, r.acts) for r in plan.runs}) == len(shapes)
    labels = [label for run in plan.runs for label in run.info["labels"]]
    assert len(labels) == len(set(labels)) == 15 and "grid-a1.2-b1.1-g1.15" in labels
    merged = [run.info["labels"] for run in plan.runs if len(run.info["labels"]) > 1]
    assert merged == [["grid-a1.1-b1.1-g1.2", "grid-a1.2-b1.1-g1.2"], ["grid-a1.1-b1.2-g1.1", "grid-a1.2-b1.2-g1.1"]]
    assert [note.split()[0] for note in plan.notes] == ["grid-a1-b1.2-g1.2"]  # 256 → 260 px jumps 1.89× → 2.15×
    paper = next(run for run in plan.runs if run.name == "grid-a1.2-b1.1-g1.15")
    assert (paper.spec.alpha, paper.spec.beta, paper.spec.gamma, paper.spec.phi) == (1.2, 1.1, 1.15, 0.5946)
    assert paper.spec.resolution == 244 and paper.entry.overrides[2:4] == ["--model.phi", "0.5946"]
    save_plan(plan)
    record = next(r for r in load_sweep(plan.directory)["runs"] if r["run_name"] == paper.name)
    assert (record["phi"], record["phi_nominal"], record["nominal_growth"]) == (0.5946, 1, 2.0)
    assert record["labels"] == [paper.name] and record["flops_vs_nominal"] == pytest.approx(1.025, abs=1e-3)


@pytest.mark.slow  # counts several nets (~1 s each) and parses configs
def test_strategy_flops_are_matched_to_s_times_the_base(digits: Path, tmp_path: Path) -> None:
    points = [Point({"strategy": "dWr", "scale": 4, "fast_alpha": 0.8}, match_flops=mode) for mode in (False, True)]
    where = ["--data.root", str(digits), "--run.root", str(tmp_path), "--model.base_resolution", "64"]
    nominal = plan_sweep("scale", "a", CONFIG, where, points[:1])
    matched = plan_sweep("scale", "b", CONFIG, where, points[1:])
    (raw,), (run,) = nominal.runs, matched.runs
    # rounding at 64 px (pycls: widths to 8, resolution to 4, the last map 2 → 3 px) makes the nominal s = 4 cost
    # 5.1× the base; at 32 px no s builds 4× (the last map jumps from 1 to 2 px)
    assert raw.flops / (4 * nominal.base_flops) > 1.2
    assert abs(run.flops / (4 * matched.base_flops) - 1) < 0.05
    assert run.name == "dWr-s4" and run.info["s_nominal"] == 4 and run.spec.s != 4
    assert ["--model.scale", f"{run.spec.s}"] == run.entry.overrides[6:8]


@pytest.mark.slow  # counts several nets (~1 s each) and parses configs
def test_slurm_submit_writes_the_manifest_and_calls_the_submit_path(
        digits: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["sweep", "scale", "--config", CONFIG, "--name", "s3", "--phi", "0,1", "--variant", "b0", "--submit",
            "slurm", "--max-parallel", "2", "--slurm-arg=--no-requeue", "--dry-run"]
    assert sweep.main([*argv, *where(digits, tmp_path), "--trainer.max_epochs", "1"]) == 0
    directory = tmp_path / "runs" / "s3"
    runs = read_manifest(directory / "run_manifest.json")
    assert [Path(r.run_dir).name for r in runs] == ["compound-phi0", "compound-phi1", "b0"]
    assert all(r.config == CONFIG and Path(r.run_dir).parent == directory for r in runs)
    assert runs[1].overrides == ["--model.variant", "null", "--model.phi", "1.0", "--model.strategy", "null",
                                 "--model.scale", "null", "--data.root", str(digits), "--run.root",
                                 str(tmp_path / "runs"), "--trainer.max_epochs", "1"]
    assert runs[2].overrides[:8] == ["--model.variant", "b0", "--model.phi", "null", "--model.strategy", "null",
                                     "--model.scale", "null"]
    plan = json.loads((directory / "sweep.json").read_text())
    assert plan["kind"] == "scale" and plan["val_images"] == 180 and plan["epochs"] == 1
    sbatch = capsys.readouterr().out.strip().splitlines()[-1]  # pipeline submit --dry-run prints the sbatch line
    assert "--array=0-2%2" in sbatch and sbatch.endswith(f"array.sbatch {directory / 'run_manifest.json'}")

    # a finished run is left out of the next array; another plan for the same directory is refused
    write_result(runs[0].run_dir, {**dict.fromkeys(RESULT_KEYS), "run_name": "compound-phi0"})
    assert sweep.main([*argv, *where(digits, tmp_path), "--trainer.max_epochs", "1"]) == 0
    assert "--array=1-2%2" in capsys.readouterr().out.strip().splitlines()[-1]
    with pytest.raises(PipelineError, match="already holds run compound-phi0 with another config"):
        sweep.main([*argv, *where(digits, tmp_path), "--trainer.max_epochs", "2"])


def test_transfer_plan_fine_tunes_each_finished_source_run(digits: Path, tmp_path: Path) -> None:
    source = tmp_path / "runs" / "src"
    for name, model in (("compound-phi1", {"phi": 1.0}), ("dWr-s2", {"strategy": "dWr", "scale": 2.1})):
        (source / name).mkdir(parents=True)
        (source / name / "config.yaml").write_text(json.dumps({"model": {"base": "efficientnet",
                                                                          "base_resolution": 32, **model}}))
        write_result(source / name, {**dict.fromkeys(RESULT_KEYS), "run_name": name, "top1": 0.9})
    (source / "unfinished").mkdir()
    transfer_config = str(REPO / "configs" / "transfer" / "cifar100.yaml")  # names no network: the sources do
    args = sweep.build_parser().parse_args(["transfer", "--from", str(source), "--dataset", "cifar100",
                                            "--config", transfer_config, "--data-root", str(digits)])
    # the digits shards hold a val split of their own (the config selects on a minival made with --holdout)
    plan = sweep.make_plan(args, ["--run.root", str(tmp_path / "runs"), "--data.val_split", "val"])
    assert plan.name == "transfer-cifar100-src"
    assert [r.name for r in plan.runs] == ["compound-phi1-cifar100", "dWr-s2.1-cifar100"]
    first = plan.runs[0].entry.overrides
    at = first.index("--model.init_from")
    assert first[at:at + 4] == ["--model.init_from", str(source / "compound-phi1"), "--run.source_run", "compound-phi1"]
    assert first[at + 4:at + 6] == ["--run.dataset", "cifar100"] and "--data.root" in first
    assert plan.runs[1].spec.strategy == "dWr" and plan.runs[1].info["source_top1"] == 0.9


@pytest.mark.parametrize(("argv", "message"), [
    (["scale", "--strategy", "dWr"], "--strategy and --scale go together"),
    (["scale", "--phi", "0..2", "--from-grid", "nowhere"], r"nowhere/grid.json not found"),
    (["scale", "--from-grid", "nowhere", "--alpha", "1.2", "--phi", "1"], "not both"),
    (["scale"], "nothing to train"),
    (["scale", "--config", CONFIG, "--phi", "-1"], "phi must be >= 0"),
    (["scale", "--config", CONFIG, "--strategy", "dWr", "--scale", "2", "--fast-alpha", "1.5"],
     "fast_alpha must be in"),
    (["scale", "--phi", "x"], "not a list of numbers"),
    (["grid", "--high", "1.0"], "no α, β, γ on the grid"),
    (["grid", "--max-candidates", "0"], "--max-candidates must be >= 1"),
    (["grid", "--images-per-s", "0"], "--images-per-s must be a positive number"),
    (["scale", "--phi", "1", "--config", "missing.yaml"], "config missing.yaml not found"),
    (["transfer", "--from", "nowhere", "--dataset", "cifar100"], "not a directory"),
    (["transfer", "--from", ".", "--dataset", "imagenet"], "invalid choice"),
])
def test_bad_input_is_one_line_and_writes_nothing(digits: Path, tmp_path: Path, argv: list[str], message: str) -> None:
    with pytest.raises(PipelineError, match=message) as err:
        sweep.main(["sweep", *argv, "--dry-run", *where(digits, tmp_path)])
    assert "\n" not in str(err.value)
    assert not (tmp_path / "runs").exists()
