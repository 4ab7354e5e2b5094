"""``pipeline report`` on synthetic records with known numbers: Wilson intervals equal scipy's for the counts, mean ±
s.d. over three seeds, Pearson r per group of comparable runs (two groups with opposite trends give two r's), the
scaling-law section naming where two strategies cross (and its parameters on the W&B report run), the warning
when selection and report used one split, and the grid ranked on val_top1 over seeds."""

from __future__ import annotations

import math
import os
from pathlib import Path

import pytest
from scipy import stats

from pipeline.atomic import atomic_write_json
from pipeline.commands.report import main
from pipeline.experiments.grid import rank
from pipeline.training.result import RESULT_KEYS, write_result
from tests.training.test_demo_wandb import read_wandb_run

N = 1000  # test images of every run
FLOPS = [1e6 * 2**k for k in range(5)]
# error = a·(C/10⁶)^(−b): w starts worse and falls faster; they cross where 0.5·x^−0.5 = 0.3·x^−0.2, x = (5/3)^(1/0.3)
LAWS = {"w": (0.5, 0.5), "d": (0.3, 0.2)}
CROSSING = 1e6 * (5 / 3) ** (1 / 0.3)  # 5.49e6 flops
OFFSETS = (-0.01, 0.0, 0.01)  # three seeds: s.d. exactly 1 point


def correct(strategy: str, k: int, seed: int) -> int:
    """Correct test images of seed ``seed`` of the strategy's point at FLOPS[k]."""
    a, b = LAWS[strategy]
    return round(N * (1 - a * 2 ** (-b * k) + OFFSETS[seed]))


def synthetic_sweep(root: Path) -> Path:
    """A scale sweep: strategies w (trained on a CPU, time grows with acts) and d (on a GPU, time falls with acts),
    five points each, three seeds."""
    sweep, runs = root / "syn", []
    for strategy, accelerator, sign in (("w", "cpu", 1), ("d", "cuda", -1)):
        for k, flops in enumerate(FLOPS):
            for seed in range(3):
                name = f"{strategy}-s{2**k}-seed{seed}"
                record = {**dict.fromkeys(RESULT_KEYS), "run_name": name, "sweep": sweep.name, "strategy": strategy,
                          "s": float(2**k), "d": 1.0, "w": 1.0, "r": 1.0, "resolution": 32, "params": 1000 * (k + 1),
                          "flops": flops, "acts": 2000 * 2**k, "top1": correct(strategy, k, seed) / N,
                          "dataset": "digits", "accelerator": accelerator, "world_size": 1, "test_images": N,
                          "epoch_time_s": 10 * 2 ** (sign * 0.5 * k) * (1 + 0.01 * seed),
                          "selected_on": "val", "reported_on": "test" if strategy == "w" else "val"}
                write_result(sweep / name, record)
                runs.append({"run_dir": str(sweep / name)})
    atomic_write_json(sweep / "sweep.json", {"kind": "scale", "name": sweep.name, "val_images": 180, "runs": runs})
    return sweep


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """The synthetic sweep's report (200 bootstrap refits, W&B offline): (sweep directory, report.md)."""
    sweep = synthetic_sweep(tmp_path_factory.mktemp("report"))
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("WANDB_MODE", "offline")
        assert main(["report", str(sweep), "--bootstrap", "200"]) == 0
    # the report's process hands no W&B service address to the jobs it may start next (a requeued job's run id
    # would be "in use" in this process's service)
    assert "WANDB_SERVICE" not in os.environ
    return sweep, (sweep / "report" / "report.md").read_text()


def test_run_intervals_are_scipys_wilson_for_the_counts(report: tuple[Path, str]) -> None:
    md = report[1]
    for strategy in LAWS:
        for k in range(5):
            count = correct(strategy, k, 2)
            ci = stats.binomtest(count, N).proportion_ci(confidence_level=0.95, method="wilson")
            cell = f"| {100 * count / N:.1f} [{100 * ci.low:.1f}, {100 * ci.high:.1f}] |"
            assert f"| {strategy}-s{2**k}-seed2 | {strategy} | s={2**k} |" in md and cell in md
    assert "evaluation images: 1000)" in md


def test_points_show_mean_and_sd_over_three_seeds(report: tuple[Path, str]) -> None:
    md = report[1]
    points = md[md.index("## Points over seeds"):md.index("## Accuracy over cost")]
    # w at s=1: 500, 490, 510 correct of 1000 → mean 50.0 %, s.d. 1.0 point; one run's Wilson interval at 500/1000
    ci = stats.binomtest(500, N).proportion_ci(method="wilson")
    assert f"| syn | w-s1 | 3 | 50.0 | 1.0 | [{100 * ci.low:.1f}, {100 * ci.high:.1f}] |" in points
    assert points.count("| syn |") == 10


def test_pearson_r_is_per_group_of_comparable_runs(report: tuple[Path, str]) -> None:
    md = report[1]
    rows = [line.split(" | ") for line in md.splitlines() if line.startswith("| activations | scale / digits / ")]
    assert [row[1] for row in rows] == ["scale / digits / cpu / 1", "scale / digits / cuda / 1"]
    for row, sign in zip(rows, (1, -1), strict=True):
        acts = [2000 * 2**k for k in range(5) for _ in range(3)]
        times = [10 * 2 ** (sign * 0.5 * k) * (1 + 0.01 * s) for k in range(5) for s in range(3)]
        found = stats.pearsonr([math.log(a) for a in acts], [math.log(t) for t in times])
        ci = found.confidence_interval()
        assert row[2:5] == [f"{found.statistic:.3f}", f"[{ci.low:.3f}, {ci.high:.3f}]", "15 |"]
        assert sign * found.statistic > 0.99  # opposite trends: pooled they would cancel


def test_the_fit_section_names_the_crossing_and_marks_the_extrapolation(report: tuple[Path, str]) -> None:
    sweep, md = report
    fits = md[md.index("## Scaling-law fits"):md.index("## Growth of params")]
    line = next(x for x in fits.splitlines() if x.startswith("- w vs d over flops"))
    crossed = float(line.split("cross at ")[1].split(" between")[0])
    assert crossed == pytest.approx(CROSSING, rel=0.03)
    assert "d lower" in line and "w lower" in line  # the data separate them on either side of the crossing
    assert "- w over flops: extrapolated to the next φ (C = 3.2e+07" in fits and "not a measurement" in fits
    assert "| w | flops (multiply-adds) | a·C^(−b) + c | 15 (5) |" in fits
    assert "fits.png" in fits and (sweep / "report" / "fits.png").stat().st_size > 10_000
    # the fitted parameters on the report's W&B run
    (run_file,) = (sweep / "report").glob("wandb-runs/syn/wandb/offline-run-*/run-*.wandb")
    summary = read_wandb_run(run_file)["summary"]
    assert summary["fit/w/flops/b"] == pytest.approx(0.5, abs=0.05)
    assert summary["fit/d/flops/b"] == pytest.approx(0.2, abs=0.05)


def test_a_warning_when_selection_and_report_used_one_split(report: tuple[Path, str]) -> None:
    md = report[1]
    warning = next(x for x in md.splitlines() if "warning:" in x)
    assert warning == ("warning: selection and report used the same split in syn (val) for 15 runs (d-s1-seed0, "
                       "d-s1-seed1, d-s1-seed2, …): their top-1 is optimistic")


def test_the_grid_ranks_on_val_top1_averaged_over_seeds() -> None:
    def run(name: str, val: float | None, top1: float, flops: int) -> dict:
        return {"run_name": name, "val_top1": val, "top1": top1, "flops": flops, "params": 1, "acts": 1,
                "resolution": 32, "alpha": 1.2, "beta": 1.1, "gamma": 1.15}

    # a has the better test top-1 but the worse validation mean; b's old record has only top1
    records = [run("a-seed0", 0.80, 0.99, 10), run("a-seed1", 0.82, 0.99, 10), run("b", None, 0.90, 20)]
    ranking = rank(records, val_images=10_000)
    assert [(r["run_name"], r["seeds"]) for r in ranking] == [("b", 1), ("a", 2)]
    assert ranking[1]["top1"] == pytest.approx(0.81) and ranking[1]["sd"] == pytest.approx(math.sqrt(2e-4))
    assert not ranking[1]["within_noise_of_best"]
