"""Run manifests: round trip, pending runs, sbatch index ranges, one-line errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.cluster.run_manifest import (
    LEGACY_RUN_MANIFEST_FILE,
    RUN_MANIFEST_FILE,
    RunEntry,
    index_ranges,
    pending,
    read_manifest,
    run_manifest_path,
    write_manifest,
)
from pipeline.errors import PipelineError


def test_round_trip_and_pending(tmp_path: Path) -> None:
    runs = [RunEntry("c.yaml", str(tmp_path / "runs" / "s" / f"phi{i}"), ["--model.phi", str(i)]) for i in range(4)]
    path = write_manifest(tmp_path / "m.json", runs)
    assert read_manifest(path) == runs
    assert pending(runs) == [0, 1, 2, 3]
    for i in (1, 2):
        Path(runs[i].run_dir).mkdir(parents=True)
        (Path(runs[i].run_dir) / "result.json").write_text("{}")
    (Path(runs[3].run_dir) / "checkpoints").mkdir(parents=True)  # started, not finished
    assert pending(runs) == [0, 3]


def test_index_ranges() -> None:
    assert index_ranges([0, 1, 2, 5, 7, 8]) == "0-2,5,7-8"
    assert index_ranges([3]) == "3"
    assert index_ranges([2, 0, 1, 1]) == "0-2"


@pytest.mark.parametrize(("text", "message"), [
    ("not json", "is not JSON"),
    ('{"runs": []}', "non-empty"),
    ('{"runs": [{"config": "c.yaml"}]}', "entry 0"),
    ('{"runs": [{"config": "c.yaml", "run_dir": "r", "overrides": "--x 1"}]}', "list of strings"),
    ('{"runs": [{"config": "a", "run_dir": "r"}, {"config": "b", "run_dir": "r"}]}', "share a run_dir"),
])
def test_bad_manifests(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "m.json"
    path.write_text(text)
    with pytest.raises(PipelineError, match=message):
        read_manifest(path)
    with pytest.raises(PipelineError, match="not found"):
        read_manifest(tmp_path / "missing.json")


def test_a_sweep_directory_keeps_the_manifest_file_it_has(tmp_path: Path) -> None:
    """New sweep directories get run_manifest.json; one made before the rename keeps (and resumes from) its
    manifest.json, and a directory never reads the legacy file once the new one exists."""
    assert run_manifest_path(tmp_path) == tmp_path / RUN_MANIFEST_FILE == tmp_path / "run_manifest.json"
    runs = [RunEntry("c.yaml", str(tmp_path / "r"))]
    write_manifest(tmp_path / LEGACY_RUN_MANIFEST_FILE, runs)
    assert run_manifest_path(tmp_path) == tmp_path / "manifest.json"
    assert read_manifest(run_manifest_path(tmp_path)) == runs
    write_manifest(tmp_path / RUN_MANIFEST_FILE, [])
    assert run_manifest_path(tmp_path) == tmp_path / "run_manifest.json"
