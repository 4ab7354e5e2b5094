"""Fixtures for the sweep tests: the real digits shards (written once per session) and the sweeps' config."""

from __future__ import annotations

from tests.training.conftest import digits  # noqa: F401  (the session's digits shards, shared with training tests)
