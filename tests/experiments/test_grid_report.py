"""Grid ranking with binomial errors (a tie within noise goes to fewer flops), one run per built network, growth
exponents against the papers' theory, and the report's sections."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from pipeline.cluster.run_manifest import RunEntry
from pipeline.errors import PipelineError
from pipeline.experiments.grid import one_run_per_network, rank, read_choice, write_ranking
from pipeline.experiments.plan import PlannedRun, SweepPlan
from pipeline.experiments.report import theory
from pipeline.experiments.stats import theory_exponents
from pipeline.scaling import resolve_spec, strategy_exponents
from pipeline.scaling.cost import effnet_cost
from pipeline.scaling.spec import EFFICIENTNET_B0


def candidate(name: str, top1: float, flops: int, abg: tuple[float, float, float]) -> dict:
    return {"run_name": name, "top1": top1, "flops": flops, "params": 1, "acts": 1, "resolution": 32,
            **dict(zip(("alpha", "beta", "gamma"), abg, strict=True))}


def test_ranking_orders_by_top1_then_flops_and_flags_the_noise(tmp_path) -> None:
    records = [candidate("a", 0.80, 30, (1.2, 1.1, 1.15)), candidate("b", 0.90, 20, (1.4, 1.0, 1.2)),
               candidate("c", 0.90, 10, (1.0, 1.4, 1.0)), candidate("d", 0.50, 5, (1.0, 1.0, 1.4)),
               {**candidate("e", 0.99, 1, (2, 1, 1)), "top1": None}]
    ranking = rank(records, val_images=180)
    assert [r["run_name"] for r in ranking] == ["c", "b", "a", "d"]  # tie at 90 % → fewer flops first
    assert ranking[0]["se"] == pytest.approx(math.sqrt(0.9 * 0.1 / 180))
    # 90 % vs 80 % on 180 images: difference 10 points, 1.96·√(se₁² + se₂²) = 7.3 points → beyond noise
    assert [r["within_noise_of_best"] for r in ranking] == [True, True, False, False]
    assert rank(records, val_images=20)[2]["within_noise_of_best"]  # on 20 images the same gap is noise
    chosen = write_ranking(tmp_path, records, 180, "top1")
    assert read_choice(tmp_path) == (1.0, 1.4, 1.0) == (chosen["alpha"], chosen["beta"], chosen["gamma"])
    assert "| 1 | 1 | 1.4 | 1 | 1.960 | - | 32 | 0.00 |" in (tmp_path / "grid.md").read_text()
    with pytest.raises(PipelineError, match="rank metric"):
        rank(records, 180, "top5")
    with pytest.raises(PipelineError, match=r"grid\.json not found"):
        read_choice(tmp_path / "none")


def test_a_tie_within_noise_goes_to_fewer_measured_flops(tmp_path) -> None:
    records = [{**candidate("x", 0.90, 800_000_000, (1.2, 1.1, 1.15)), "labels": ["x", "x2"], "phi": 0.5946},
               candidate("y", 0.88, 780_000_000, (1.0, 1.4, 1.0)), candidate("z", 0.70, 700_000_000, (1, 1, 1.4))]
    # 90 % vs 88 % on 180 images: 2 points < 1.96·√(se₁² + se₂²) = 6.5 points → a tie, the cheaper y first;
    # 70 % is beyond the noise and ranks after them however cheap
    ranking = rank(records, val_images=180)
    assert [(r["run_name"], r["within_noise_of_best"]) for r in ranking] == [("y", True), ("x", True), ("z", False)]
    write_ranking(tmp_path, records, 180, "top1")
    assert read_choice(tmp_path) == (1.0, 1.4, 1.0)
    table = (tmp_path / "grid.md").read_text()
    assert "| 2 | 1.2 | 1.1 | 1.15 | 1.920 | 0.5946 | 32 | 800.00 |" in table and table.count("| x, x2 |") == 1
    assert rank(records, val_images=10_000)[0]["run_name"] == "x"  # on 10,000 images 2 points are beyond noise


def planned(abg: tuple[float, float, float], phi: float) -> PlannedRun:
    """A grid candidate at 224 px trained at φ′ = ``phi``, counted by pycls's rules (equal to the built count)."""
    spec = resolve_spec(phi=phi, alpha=abg[0], beta=abg[1], gamma=abg[2], base_resolution=224)
    shape = spec.stages()
    assert shape is not None
    cost = effnet_cost(shape, spec.resolution, 10)
    name = "grid-a{:g}-b{:g}-g{:g}".format(*abg)
    return PlannedRun(name, spec, cost.flops, cost.params, cost.acts, 2.0, RunEntry("c.yaml", f"/runs/g/{name}"),
                      {"phi_nominal": 1, "target_growth": 2.0})


def test_one_run_per_network_merges_same_networks_and_leaves_out_unmatched() -> None:
    base = effnet_cost(EFFICIENTNET_B0, 224, 10).flops
    runs = [planned((1.1, 1.1, 1.2), 0.5), planned((1.0, 1.2, 1.2), 0.7711), planned((1.2, 1.1, 1.2), 0.5),
            planned((1.2, 1.1, 1.15), 0.5946)]
    plan = SweepPlan("grid", "g", Path("/runs/g"), "c.yaml", [], "digits", 1437, 180, 3, base, runs)
    # ceil depth rounding: α^0.5 = 1.049 and 1.095 both add one block per stage, so a1.1 and a1.2 are one net
    assert runs[0].spec.stages() == runs[2].spec.stages() and runs[0].spec.resolution == runs[2].spec.resolution == 244
    assert runs[1].flops / base == pytest.approx(1.893, abs=1e-3)  # 256 → 260 px jumps to 2.15×: no φ′ within 5 %
    kept = one_run_per_network(plan, 0.05)
    assert [(r.name, r.info["labels"]) for r in kept.runs] == [
        ("grid-a1.1-b1.1-g1.2", ["grid-a1.1-b1.1-g1.2", "grid-a1.2-b1.1-g1.2"]),
        ("grid-a1.2-b1.1-g1.15", ["grid-a1.2-b1.1-g1.15"])]
    assert [r.flops / base for r in kept.runs] == pytest.approx([2.004, 2.049], abs=1e-3)
    (note,) = kept.notes
    assert note.startswith("grid-a1-b1.2-g1.2 left out: its closest φ′ = 0.7711 builds 1.89×")
    assert kept.record()["notes"] == [note] and kept.record()["runs"][0]["labels"] == kept.runs[0].info["labels"]
    assert len(one_run_per_network(plan, 0.06).runs) == 3  # 1.893 is within 6 % of 2
    with pytest.raises(PipelineError, match=r"no grid candidate builds a network within ±0\.001"):
        one_run_per_network(plan, 0.001)


@pytest.mark.parametrize(("strategy", "params", "acts"), [
    ("w", 1, 0.5), ("d", 1, 1), ("r", 0, 1), ("dw", 1, 0.75), ("dr", 0.5, 1), ("wr", 0.5, 0.75),
    ("dwr", 2 / 3, 5 / 6), ("dWr", 0.9, 0.6),
])
def test_theory_exponents_match_dollar_table_1(strategy: str, params: float, acts: float) -> None:
    assert theory_exponents(*strategy_exponents(strategy)) == pytest.approx((params, acts))
    assert theory({"strategy": strategy, "fast_alpha": 0.8}) == pytest.approx((params, acts))


def test_compound_theory() -> None:
    # paper α, β, γ: params ∝ (αβ²)^φ, flops ∝ (αβ²γ²)^φ
    expected = math.log(1.2 * 1.1**2) / math.log(1.2 * 1.1**2 * 1.15**2)
    assert theory({"strategy": "compound", "alpha": 1.2, "beta": 1.1, "gamma": 1.15})[0] == pytest.approx(expected)
    assert theory({"strategy": "variant"}) is None


def test_transfer_report_shows_each_dataset_beside_the_source(tmp_path) -> None:
    from pipeline.atomic import atomic_write_json
    from pipeline.commands.report import main
    from pipeline.training.result import RESULT_KEYS, write_result

    sweep, runs = tmp_path / "transfer-cifar100-scale", []
    for i, (source, top1, source_top1) in enumerate((("compound-phi0", 0.60, 0.86), ("compound-phi1", 0.70, 0.90))):
        run_dir = sweep / f"{source}-cifar100"
        write_result(run_dir, {**dict.fromkeys(RESULT_KEYS), "run_name": run_dir.name, "sweep": sweep.name,
                               "strategy": "compound", "phi": float(i), "d": 1.2**i, "w": 1.1**i, "r": 1.15**i,
                               "resolution": 32 + 4 * i, "params": 4_000_000 * 2**i, "flops": 8_000_000 * 4**i,
                               "acts": 150_000 * 2**i, "top1": top1, "epoch_time_s": 10.0 * (i + 1),
                               "dataset": "cifar100", "source_run": source})
        runs.append({"run_dir": str(run_dir), "source_top1": source_top1})
    plan = {"kind": "transfer", "name": sweep.name, "val_images": 10_000, "runs": runs}
    atomic_write_json(sweep / "sweep.json", plan)
    assert main(["report", str(sweep), "--no-wandb"]) == 0
    md = (sweep / "report" / "report.md").read_text()
    assert "| cifar100 | compound-phi1 | 32.0 | 70.0 [69.1, 70.9] | 90.0 |" in md  # Wilson on 7000 of 10⁴
    assert "![Transfer](transfer.png)" in md and (sweep / "report" / "transfer.png").stat().st_size > 10_000
