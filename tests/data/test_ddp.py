"""Real multi-process runs (torch.distributed gloo, spawned processes, DataLoader workers).

Every train step does an all-reduce, like DDP's gradient sync: if one rank ran out of batches first the
other would block and the 60 s process-group timeout would fail the test.
"""

from __future__ import annotations

import json
import socket
from collections import Counter
from datetime import timedelta
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from pipeline.data.datamodule import ShardDataModule
from pipeline.data.sharding import write_shards
from tests.data.helpers import TinySource

BATCH = 4
EPOCHS = 2


@pytest.fixture(scope="module")
def shards(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("ddp")
    # 7 train shards (10 each); val 43 samples in 5 shards (10, 10, 10, 10, 3): divides by no ranks × workers
    write_shards(TinySource({"train": 70, "val": 43}), out, shard_size=10)
    return out


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_rank(rank: int, world_size: int, port: int, root: str, num_workers: int, result: str) -> None:
    """One rank: two train epochs (all-reduce per step) and one validation pass, keys gathered to rank 0."""
    torch.set_num_threads(1)  # forked ranks on a shared machine: no intra-op thread pools
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world_size,
                            timeout=timedelta(seconds=60))
    try:
        dm = ShardDataModule(root, resolution=8, batch_size=BATCH, num_workers=num_workers, shuffle_buffer=8,
                             crop_pct=1.0)
        dm.setup("fit")
        train = dm.loader("train", keys=True)
        record: dict = {"rank": rank, "len": len(train), "epochs": []}
        for _ in range(EPOCHS):
            keys, steps = [], 0
            for _images, labels, _skipped, batch_keys in train:
                dist.all_reduce(torch.ones(1))  # a per-step collective, as in DDP training
                steps += 1
                assert len(labels) == BATCH
                keys += batch_keys
            record["epochs"].append({"steps": steps, "keys": keys})
        val = dm.loader("val", keys=True)
        batches = list(val)
        record["val_len"], record["val_batches"] = len(val), len(batches)
        record["val"] = [k for batch in batches for k in batch[3]]
        gathered: list = [None] * world_size
        dist.all_gather_object(gathered, record)
        if rank == 0:
            Path(result).write_text(json.dumps(gathered))
    finally:
        dist.destroy_process_group()


def run(world_size: int, num_workers: int, root: Path, tmp_path: Path) -> list[dict]:
    """Run ``world_size`` ranks (spawned processes; a single rank runs in this process) and return their records."""
    result = tmp_path / "result.json"
    args = (world_size, free_port(), str(root), num_workers, str(result))
    if world_size == 1:
        run_rank(0, *args)
    else:
        # fork: ranks inherit the imported modules (spawn re-imports torch + Lightning + timm per rank: minutes
        # on a loaded 2-core machine); each rank still builds its own process group and DataLoader workers
        mp.start_processes(run_rank, args=args, nprocs=world_size, start_method="fork")
    return json.loads(result.read_text())


def check_exact_train_epoch(ranks: list[dict], epoch: int, steps: int) -> None:
    """Every train sample the cut allows read exactly once across ranks × workers (disjoint, none repeated)."""
    keys = [k for r in ranks for k in r["epochs"][epoch]["keys"]]
    assert len(keys) == len(set(keys)) == steps * BATCH * len(ranks) > 70 - len(ranks) * BATCH


def check_exact_eval(ranks: list[dict]) -> None:
    keys = Counter(k for r in ranks for k in r["val"])
    assert keys == Counter({f"val_{i:04d}": 1 for i in range(43)})  # every val sample exactly once
    assert all(r["val_len"] == r["val_batches"] > 0 for r in ranks)  # each rank's eval length known in advance


@pytest.mark.slow
def test_two_rank_ddp_over_seven_shards(shards: Path, tmp_path: Path) -> None:
    """Must show: equal train batches on both ranks, each train sample the cut allows once per epoch across the
    ranks' workers, and the exact validation sample count (each key once)."""
    ranks = run(2, 2, shards, tmp_path)
    expected = 70 // (2 * BATCH)
    for epoch in range(EPOCHS):
        steps = [r["epochs"][epoch]["steps"] for r in ranks]
        assert steps == [expected, expected] and [r["len"] for r in ranks] == steps
        check_exact_train_epoch(ranks, epoch, expected)
    assert ranks[0]["epochs"][0]["keys"] != ranks[0]["epochs"][1]["keys"]  # a new order each epoch
    check_exact_eval(ranks)
    assert sum(len(r["val"]) for r in ranks) == 43


@pytest.mark.parametrize(("world_size", "num_workers"), [(1, 2), pytest.param(3, 1, marks=pytest.mark.slow)])
def test_exact_eval_and_equal_batches_with_one_and_three_ranks(
    shards: Path, tmp_path: Path, world_size: int, num_workers: int
) -> None:
    ranks = run(world_size, num_workers, shards, tmp_path)
    expected = 70 // (world_size * BATCH)
    assert all(r["len"] == expected and [e["steps"] for e in r["epochs"]] == [expected] * EPOCHS for r in ranks)
    for epoch in range(EPOCHS):
        check_exact_train_epoch(ranks, epoch, expected)
    check_exact_eval(ranks)
