"""Tile sharing under torch.distributed: 2 gloo processes under torchrun = 1 process; a dead rank is resumed."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import pntk.store
from pntk.compute import compute
from pntk.distributed import Group, share
from pntk.tiling import tile_plan
from store_worker import TILE, make_problem

WORKER = Path(__file__).parent / "store_worker.py"


@pytest.mark.parametrize("world_size", [1, 2, 3, 5])
@pytest.mark.parametrize("symmetric", [True, False])
def test_share_deals_every_tile_once_and_balances_the_work(world_size, symmetric):
    plan = tile_plan(23, 23 if symmetric else 17, 5, symmetric=symmetric)
    shares = [share(plan, Group(r, world_size)) for r in range(world_size)]
    assert sorted(t for s in shares for t in s) == sorted(plan)
    work = [sum((t.r1 - t.r0) * (t.c1 - t.c0) for t in s) for s in shares]
    assert max(work) - min(work) <= 25  # within one full tile
    assert all(s == sorted(s) for s in shares)  # row-major: each row block is prepared once per rank
    assert shares == [share(plan, Group(r, world_size)) for r in range(world_size)]


def torchrun(out, *options):
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc-per-node",
        "2",
        str(WORKER),
        str(out),
        "--kind",
        "trace",
        *options,
    ]
    return subprocess.run(command, capture_output=True, text=True, timeout=120)


@pytest.fixture(scope="module")
def one_process(tmp_path_factory):
    """The single-process store, with one thread like each torchrun rank."""
    model, x = make_problem()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return compute(model, x, kind="trace", out=tmp_path_factory.mktemp("one") / "k.zarr", batch_size=TILE).numpy()
    finally:
        torch.set_num_threads(threads)


def test_two_processes_equal_one(tmp_path, one_process):
    run = torchrun(tmp_path / "k.zarr")
    assert run.returncode == 0, run.stderr[-3000:]
    K = pntk.store.open(tmp_path / "k.zarr")
    assert K.complete and K.attrs["complete"]
    ledger = tmp_path / "k.zarr" / ".pntk" / "ledger"
    assert {json.loads(entry.read_text())["rank"] for entry in ledger.iterdir()} == {0, 1}
    np.testing.assert_array_equal(K.numpy(), one_process)


def test_a_dead_rank_leaves_its_tiles_to_the_rerun(tmp_path, one_process):
    out = tmp_path / "k.zarr"
    crashed = torchrun(out, "--die-rank", "1", "--die-after", "1")
    assert crashed.returncode != 0
    K = pntk.store.open(out)
    assert not K.complete and not K.attrs["complete"]
    assert 1 <= len(K.finished_tiles()) < len(K.spec.plan())
    rerun = torchrun(out)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    K = pntk.store.open(out)
    assert K.complete and K.attrs["complete"]
    np.testing.assert_array_equal(K.numpy(), one_process)
