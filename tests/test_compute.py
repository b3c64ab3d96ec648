"""pntk.compute: tiled store = in-memory kernel, for every kind and data source; resume after SIGKILL."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, Dataset, TensorDataset

import pntk
import pntk.data
import pntk.store
from pntk.compute import compute
from pntk.kernels import Kind, functional_model
from pntk.kernels.inputs import Inputs
from pntk.planning import DEFAULT_OPTIONS, engine_of, make_plan, tile_memory
from pntk.store import KernelStore
from pntk.tiling import largest_tile, parse_bytes
from store_worker import make_problem
from zoo import make_case

WORKER = Path(__file__).parent / "store_worker.py"


def reference(model, x1, x2, kind, tile):
    """The in-memory kernel with the store's tile as block size: the same tiles, hence the same numbers."""
    return pntk.kernel(model, x1, x2, kind=kind, batch_size=tile).numpy()


@pytest.mark.parametrize("kind", ["entk", "trace", "pntk"])
@pytest.mark.parametrize("symmetric", [True, False], ids=["symmetric", "rectangular"])
def test_store_equals_in_memory_kernel(tmp_path, kind, symmetric):
    model, make_inputs = make_case("mlp")
    g = torch.Generator().manual_seed(0)
    x1, x2 = make_inputs(11, g), None if symmetric else make_inputs(7, g)
    K = compute(model, x1, x2, kind=kind, out=tmp_path / "k.zarr", batch_size=4)  # 4 divides neither 11 nor 7
    assert K.complete and K.attrs["complete"] and K.spec.tile == 4
    np.testing.assert_array_equal(K.numpy(), reference(model, x1, x2, kind, 4))
    np.testing.assert_array_equal(np.asarray(K)[3:9, 1:6], K[3:9, 1:6])


def test_multi_input_model_and_float64(tmp_path):
    model, make_inputs = make_case("two_inputs")
    x = make_inputs(9, torch.Generator().manual_seed(0))
    K = compute(model, x, kind="entk", out=tmp_path / "k.zarr", batch_size=4, dtype=torch.float64)
    assert K.dtype == np.float64
    expected = pntk.kernel(model, x, kind="entk", batch_size=4, dtype=torch.float64).numpy()
    np.testing.assert_array_equal(K.numpy(), expected)


class Pairs(Dataset):
    """(input, label) items that count how often they are read."""

    def __init__(self, x):
        self.x, self.reads = x, 0

    def __len__(self):
        return len(self.x)

    def __getitem__(self, k):
        self.reads += 1
        return self.x[k], k % 3


def test_datasets_loaders_and_arrays_give_the_same_store(tmp_path):
    model, x = make_problem(13)
    expected = compute(model, x, kind="pntk", out=tmp_path / "tensor.zarr", batch_size=5)
    np.save(tmp_path / "x.npy", x.numpy())
    dataset = Pairs(x)
    sources = {
        "dataset": dataset,
        "loader": DataLoader(TensorDataset(x, torch.zeros(13)), batch_size=4),
        "memmap": np.load(tmp_path / "x.npy", mmap_mode="r"),
        "pntk.data": pntk.data.Dataset("random", "train", x, torch.zeros(13, dtype=torch.long), 3),
    }
    for name, data in sources.items():
        K = compute(model, data, kind="pntk", out=tmp_path / f"{name}.zarr", batch_size=5)
        np.testing.assert_array_equal(K.numpy(), expected.numpy(), err_msg=name)
        assert K.spec.data1 == expected.spec.data1, f"{name}: the data fingerprint depends on the wrapper"
    # Rows are read per tile and per hashing block, never the dataset at once as a whole: a bounded count.
    assert dataset.reads < 10 * len(x)


def test_shuffling_loader_and_iterable_dataset_are_refused(tmp_path):
    model, x = make_problem(6)
    with pytest.raises(ValueError, match="shuffle=False"):
        compute(model, DataLoader(x, shuffle=True), kind="pntk", out=tmp_path / "k.zarr")

    class Stream(torch.utils.data.IterableDataset):
        def __iter__(self):
            return iter(x)

    with pytest.raises(TypeError, match="map-style"):
        compute(model, Stream(), kind="pntk", out=tmp_path / "k.zarr")


def test_log_json_has_one_line_per_tile(tmp_path):
    model, x = make_problem(12)
    log = tmp_path / "tiles.jsonl"
    compute(model, x, kind="pntk", out=tmp_path / "k.zarr", batch_size=5, log_json=log)
    lines = [json.loads(line) for line in log.read_text().splitlines()]
    assert [(r["i"], r["j"]) for r in lines] == [(0, 0), (0, 1), (0, 2), (1, 1), (1, 2), (2, 2)]
    assert sum(r["entries"] for r in lines) == 12 * 12  # mirrored entries count: the whole square
    assert all(r["rank"] == 0 and r["seconds"] > 0 for r in lines)


# --- memory budget -------------------------------------------------------------------------------------


def test_parse_bytes():
    assert parse_bytes("512MB") == 512 * 10**6
    assert parse_bytes("2GiB") == 2 * 2**30
    assert parse_bytes("1.5 gb") == 1_500_000_000
    assert parse_bytes(4096) == 4096
    for bad in ("4 parsecs", "", "-1GB", 0):
        with pytest.raises(ValueError):
            parse_bytes(bad)


def test_largest_tile_is_the_last_that_fits():
    assert largest_tile(1000, lambda t: t * t, 10_000) == 100
    assert largest_tile(50, lambda t: t * t, 10_000) == 50
    assert largest_tile(1000, lambda t: 10 + t, 5) is None


def test_memory_budget_plans_the_tile(tmp_path):
    model, x = make_problem(40)
    fm = functional_model(model, Inputs((x[:2],)))
    plan = make_plan(fm, Kind.ENTK, 40, 40, symmetric=True, memory="60kB", executor="store")
    eng, t = engine_of(plan), plan.tile

    def need(t: int) -> int:
        working = plan.working.total if plan.engine == "structured" else 0
        buffers = DEFAULT_OPTIONS.store_buffers
        return tile_memory(fm, eng, Kind.ENTK, t, buffers=buffers, working=working, options=DEFAULT_OPTIONS)

    largest = largest_tile(40, need, 60_000)
    assert 1 <= largest < 40 and need(largest + 1) > 60_000
    per_side = -(-40 // largest)
    assert -(-40 // t) == per_side and t * per_side - 40 < per_side  # as few tiles, of equal edges
    K = compute(model, x, kind="entk", out=tmp_path / "k.zarr", memory="60kB")
    assert K.spec.tile == t and K.array.chunks == (t, t, 4, 4)
    np.testing.assert_array_equal(K.numpy(), reference(model, x, None, "entk", t))
    with pytest.raises(ValueError, match="too small"):
        compute(model, x, kind="entk", out=tmp_path / "tiny.zarr", memory="100B")
    with pytest.raises(ValueError, match="more than memory"):
        compute(model, x, kind="entk", out=tmp_path / "big.zarr", memory="60kB", batch_size=largest + 1)


# --- resume --------------------------------------------------------------------------------------------


def test_rerun_after_sigkill_is_bit_identical(tmp_path):
    """A run killed mid-tile keeps its recorded tiles; the rerun computes the rest and matches a clean run."""
    out = tmp_path / "k.zarr"
    ledger = out / ".pntk" / "ledger"
    child = subprocess.Popen([sys.executable, str(WORKER), str(out), "--kind", "entk", "--sleep", "0.3"])
    try:
        deadline = time.monotonic() + 60
        while not (ledger.is_dir() and len(os.listdir(ledger)) >= 3):
            assert child.poll() is None and time.monotonic() < deadline, "the worker ended before 3 tiles"
            time.sleep(0.02)
        time.sleep(0.1)  # into the sleep inside the next tile's contraction
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()
    interrupted = pntk.store.open(out)
    done = interrupted.finished_tiles()
    assert 3 <= len(done) < len(interrupted.spec.plan()) and not interrupted.attrs["complete"]
    assert np.isnan(interrupted.numpy()).any()  # missing tiles read as the fill value

    model, x = make_problem()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as the worker
    try:
        resumed = compute(model, x, kind="entk", out=out, batch_size=5, log_json=tmp_path / "log.jsonl")
        clean = compute(model, x, kind="entk", out=tmp_path / "clean.zarr", batch_size=5)
    finally:
        torch.set_num_threads(threads)
    recomputed = {(r["i"], r["j"]) for r in map(json.loads, (tmp_path / "log.jsonl").read_text().splitlines())}
    assert recomputed.isdisjoint(done) and len(recomputed) + len(done) == len(clean.spec.plan())
    assert resumed.complete and resumed.attrs["complete"]
    np.testing.assert_array_equal(resumed.numpy(), clean.numpy())


def test_only_the_ledger_counts(tmp_path, monkeypatch):
    """A tile whose chunk was written but not recorded, or whose chunk is garbage, is recomputed."""
    model, x = make_problem(12)
    out = tmp_path / "k.zarr"
    record, calls = KernelStore._record, []

    def crash_on_third(self, tile, entry):
        calls.append(tile)
        if len(calls) == 3:
            raise KeyboardInterrupt  # after the chunk is durable, before the ledger entry
        record(self, tile, entry)

    monkeypatch.setattr(KernelStore, "_record", crash_on_third)
    with pytest.raises(KeyboardInterrupt):
        compute(model, x, kind="pntk", out=out, batch_size=5)
    monkeypatch.undo()
    store = pntk.store.open(out)
    assert store.finished_tiles() == {(0, 0), (0, 1)}
    chunk = out / store.array.metadata.encode_chunk_key((0, 2))
    chunk.write_bytes(b"torn")  # as if the process died inside the write
    leftover = chunk.with_name("2.0123abcd.partial")  # as Zarr's temporary file of a killed write
    leftover.write_bytes(b"half")
    K = compute(model, x, kind="pntk", out=out)
    np.testing.assert_array_equal(K.numpy(), reference(model, x, None, "pntk", 5))
    assert not leftover.exists()
