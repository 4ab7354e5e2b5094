"""One intra-op thread while these tests run: counts do not depend on it, and on shared CI cores
OpenMP's waiting threads made tests/models 4× slower (measured: 131 s → 33 s for the slow ones)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch


@pytest.fixture(scope="module", autouse=True)
def one_thread() -> Iterator[None]:
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
