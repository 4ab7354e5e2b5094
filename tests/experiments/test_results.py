"""The result record store: atomic writes, complete records, tables."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.errors import PipelineError
from pipeline.experiments.tables import format_table
from pipeline.training.result import RESULT_KEYS, read_result, read_results, write_result


def record(name: str, top1: float) -> dict:
    rec = dict.fromkeys(RESULT_KEYS)
    rec.update(run_name=name, sweep="demo", phi=0.0, params=4_020_358, flops=8_484_198, top1=top1)
    return rec


def test_records_round_trip_and_missing_runs(tmp_path: Path) -> None:
    assert read_result(tmp_path / "nothing") is None
    write_result(tmp_path / "demo" / "b", record("b", 0.5))
    write_result(tmp_path / "demo" / "a", record("a", 0.93))
    found = read_results(tmp_path)
    assert [r["run_name"] for r in found] == ["a", "b"] and found[0]["top1"] == 0.93
    assert not list(tmp_path.rglob("*.tmp"))


def test_incomplete_or_corrupt_records_are_refused(tmp_path: Path) -> None:
    with pytest.raises(PipelineError, match="lacks"):
        write_result(tmp_path, {"run_name": "x"})
    (tmp_path / "result.json").write_text("{")
    with pytest.raises(PipelineError, match="not valid JSON"):
        read_result(tmp_path)


def test_table() -> None:
    table = format_table([record("a", 0.931)], ["run_name", "params", "flops", "top1", "top5"]).splitlines()
    assert table[0].split() == ["run_name", "params", "flops", "top1", "top5"]
    assert table[2].split() == ["a", "4.02M", "8.48M", "93.1%", "-"]


def test_results_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from pipeline.commands.results import main

    write_result(tmp_path / "demo" / "a", record("a", 0.9))
    assert main(["results", str(tmp_path), "--columns", "run_name", "top1"]) == 0
    assert capsys.readouterr().out.splitlines()[2].split() == ["a", "90.0%"]
    with pytest.raises(PipelineError, match=r"no result\.json"):
        main(["results", str(tmp_path / "empty")])


def test_plot_of_accuracy_over_costs(tmp_path: Path) -> None:
    from PIL import Image

    from pipeline.experiments.plots import plot_scaling

    records = [dict(record(f"compound-phi{i}", 0.8 + i / 100), strategy="compound", flops=8e6 * 2**i, acts=1e5 * 2**i)
               for i in range(3)]
    path = plot_scaling([*records, record("unfinished", None)], tmp_path / "plots" / "scaling.png")
    with Image.open(path) as image:
        assert image.format == "PNG" and image.size == (1200, 480)
    with pytest.raises(PipelineError, match="no finished run"):
        plot_scaling([record("unfinished", None)], tmp_path / "none.png")
