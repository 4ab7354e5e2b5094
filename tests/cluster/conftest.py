"""Fixtures of the cluster tests: the embedded digits as real shards."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline import cli


@pytest.fixture(scope="session")
def shards(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The embedded digits as real shards (``pipeline shards digits``)."""
    out = tmp_path_factory.mktemp("digits")
    assert cli.main(["shards", "digits", "--out", str(out)]) == 0
    return out
