"""Atomic writes: whole or nothing, and readable by others like a plain open() would make them."""

from __future__ import annotations

import os
from pathlib import Path
from typing import IO

import pytest

from pipeline.atomic import atomic_write, atomic_write_json


def test_failed_write_keeps_the_previous_file_and_leaves_no_temp(tmp_path: Path) -> None:
    target = tmp_path / "result.json"
    atomic_write_json(target, {"top1": 0.5})

    def crash(f: IO[bytes]) -> None:
        f.write(b'{"top1": 0.')
        raise KeyboardInterrupt  # e.g. preemption mid-write

    with pytest.raises(KeyboardInterrupt):
        atomic_write(target, crash)
    assert target.read_text() == '{\n  "top1": 0.5\n}\n'
    assert sorted(p.name for p in tmp_path.iterdir()) == ["result.json"]


def test_mode_follows_umask_not_mkstemp(tmp_path: Path) -> None:
    old = os.umask(0o022)
    try:
        path = atomic_write_json(tmp_path / "sub" / "manifest.json", [1, 2])
    finally:
        os.umask(old)
    assert path.stat().st_mode & 0o777 == 0o644
