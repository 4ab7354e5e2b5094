"""Grid ranking with binomial errors, growth exponents against the papers' theory, and the report's sections."""

from __future__ import annotations

import math

import pytest

from pipeline.errors import PipelineError
from pipeline.experiments.grid import rank, read_choice, write_ranking
from pipeline.experiments.report import theory
from pipeline.experiments.stats import binomial_se, growth_exponent, pearson_r, theory_exponents
from pipeline.scaling import strategy_exponents


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
    assert "| 1 | 1 | 1.4 | 1 | 1.960 | 32 |" in (tmp_path / "grid.md").read_text()
    with pytest.raises(PipelineError, match="rank metric"):
        rank(records, 180, "top5")
    with pytest.raises(PipelineError, match=r"grid\.json not found"):
        read_choice(tmp_path / "none")


@pytest.mark.parametrize(("strategy", "params", "acts"), [
    ("w", 1, 0.5), ("d", 1, 1), ("r", 0, 1), ("dw", 1, 0.75), ("dr", 0.5, 1), ("wr", 0.5, 0.75),
    ("dwr", 2 / 3, 5 / 6), ("dWr", 0.9, 0.6),
])
def test_theory_exponents_match_dollar_table_1(strategy: str, params: float, acts: float) -> None:
    assert theory_exponents(*strategy_exponents(strategy)) == pytest.approx((params, acts))
    assert theory({"strategy": strategy, "fast_alpha": 0.8}) == pytest.approx((params, acts))


def test_compound_theory_and_fits() -> None:
    # paper α, β, γ: params ∝ (αβ²)^φ, flops ∝ (αβ²γ²)^φ
    expected = math.log(1.2 * 1.1**2) / math.log(1.2 * 1.1**2 * 1.15**2)
    assert theory({"strategy": "compound", "alpha": 1.2, "beta": 1.1, "gamma": 1.15})[0] == pytest.approx(expected)
    assert theory({"strategy": "variant"}) is None
    flops = [1e6, 4e6, 16e6]
    assert growth_exponent(flops, [f**0.6 for f in flops]) == pytest.approx(0.6)
    assert growth_exponent([1e6, 1e6], [1, 2]) is None
    assert pearson_r([1, 2, 3], [2, 4, 6.5]) == pytest.approx(4.5 / math.sqrt(2 * 61 / 6))  # Σdxdy / √(Σdx² Σdy²)
    assert pearson_r([1, 2], [1, 2]) is None
    assert binomial_se(0.5, 100) == 0.05


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
    assert "| cifar100 | compound-phi1 | 32.0 | 70.0 ± 0.9 | 90.0 |" in md  # 1.96·√(.7·.3/10⁴) = 0.9 points
    assert "![Transfer](transfer.png)" in md and (sweep / "report" / "transfer.png").stat().st_size > 10_000
