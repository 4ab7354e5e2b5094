"""``pipeline complexity`` as a user runs it: a subprocess, its stdout, stderr and exit status."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pipeline.cli", "complexity", *args],
        capture_output=True, text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"},  # see conftest.py
    )


def test_table_for_variants():
    done = run("--variant", "b0", "b1")
    assert done.returncode == 0, done.stderr
    header, b0, b1, footer = done.stdout.splitlines()
    assert header.split() == ["name", "strategy", "φ|s", "d", "w", "r", "res", "params(M)", "flops(B)", "acts(M)",
                              "×flops", "×params", "×acts"]
    assert b0.split() == ["b0", "variant", "-", "1.000", "1.000", "1.000", "224", "5.29", "0.386", "6.75",
                          "1.00", "1.00", "1.00"]
    assert b1.split()[:10] == ["b1", "variant", "-", "1.100", "1.000", "1.071", "240", "7.79", "0.687", "10.88"]
    assert b1.split()[10:] == ["1.78", "1.47", "1.61"]
    assert "growth over efficientnet" in footer
    assert done.stderr == ""


def test_json_rows_for_strategies():
    done = run("--strategy", "w", "r", "--scale", "1,4", "--json")
    assert done.returncode == 0, done.stderr
    rows = [json.loads(line) for line in done.stdout.splitlines()]
    assert [r["name"] for r in rows] == ["w-s1", "w-s4", "r-s1", "r-s4"]
    for r in rows:
        assert {"name", "d", "w", "r", "resolution", "params", "flops", "acts"} <= r.keys()
    w1, w4, _, r4 = rows
    assert (w1["flops"], w1["params"], w1["acts"]) == (385_825_092, 5_288_548, 6_748_036)
    assert (w4["w"], w4["resolution"], r4["r"], r4["resolution"]) == (2.0, 224, 2.0, 448)
    assert w4["acts_growth"] == pytest.approx(2, rel=0.01)
    assert r4["acts_growth"] == pytest.approx(4, rel=0.01)


def test_rounding_and_stages():
    """Strategy points are pycls-rounded unless --rounding tf; --stages adds the shape table below the first."""
    done = run("--strategy", "dWr", "--scale", "4", "--stages")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[1].split()[7:9] == ["15.82", "1.381"] and lines[3] == ""  # pycls's dWr s = 4: 1,381 M
    assert lines[4].split() == ["name", "rounding", "depths", "widths", "stem", "head", "dropout", "drop_path",
                                "dropout", "by"]
    assert lines[5].split() == ["dWr-s4", "pycls", "1,2,2,3,3,5,1", "24,40,72,136,192,336,560", "56", "2232",
                                "0.3", "0.2", "flops"]
    tf = [json.loads(line) for line in run("--strategy", "dWr", "--scale", "4", "--rounding", "tf", "--json")
          .stdout.splitlines()]
    assert [(r["rounding"], r["depths"], r["stem"], r["head"], r["flops"]) for r in tf] == [
        ("tf", [2, 3, 3, 4, 4, 5, 2], 56, 2232, 1_997_765_658)]


def test_help_has_examples():
    done = run("--help")
    assert done.returncode == 0
    assert "--strategy w d r dwr dWr --scale 1,4,16" in done.stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--phi", "-1"], "phi must be >= 0"),
        (["--phi", "1", "--alpha", "0.9"], "alpha must be >= 1"),
        (["--strategy", "dwx", "--scale", "2"], "invalid choice: 'dwx'"),
        (["--phi", "0", "--base-resolution", "16"], "resolution 16 is smaller than the efficientnet output stride 32"),
        (["--strategy", "r", "--scale", "0.01"], "resolution 24 is smaller"),
        (["--phi", "0..x"], "'0..x' is not a list of numbers"),
        (["--strategy", "d", "--scale", "1,,4"], "'1,,4' is not a list of numbers"),
        (["--phi", "nan"], "'nan' is not a list of numbers"),
        (["--strategy", "d"], "--strategy needs flops factors"),
        (["--variant", "b0", "--alpha", "1.3"], "--alpha given without its mode"),
        (["--variant", "b9"], "unknown variant 'b9'"),
        (["--variant", "b1", "--base", "resnet50"], "named variants are EfficientNet's"),
        (["--strategy", "dWr", "--scale", "4", "--fast-alpha", "1.5"], "fast_alpha must be in [0, 1]"),
        (["--phi", "1", "--num-classes", "0"], "--num-classes must be >= 1"),
        ([], "one of the arguments --variant --phi --strategy is required"),
        (["--strategy", "w", "--scale", "4", "--base", "mobilenetv2", "--rounding", "pycls"], "use rounding tf"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(args, message):
    done = run(*args)
    assert done.returncode == 2
    assert done.stdout == ""
    assert len(done.stderr.splitlines()) == 1 and "Traceback" not in done.stderr
    assert done.stderr.startswith("pipeline complexity: error: ")
    assert message in done.stderr
