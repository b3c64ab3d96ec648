"""Damaged stores: flipped bytes, deleted or truncated chunks, lost ledgers, read-only stores, a full disk.

Every fault must be detected (a read raises StoreCorruptError naming the tile, `verify` lists it) and
repaired by rerunning the same call, which ends bit-identical to a store that never saw the fault.
"""

import errno
import json
import os
import re
import shutil
import warnings

import numpy as np
import pytest
import torch

import pntk.store
from pntk.compute import compute
from pntk.errors import PntkError, StoreCorruptError, StoreError
from pntk.store import KernelStore
from store_worker import make_problem

N, TILE = 12, 5  # a 3 × 3 grid of tiles, 6 of them computed (symmetric), the last row and column short


@pytest.fixture(scope="module")
def problem():
    return make_problem(N)


@pytest.fixture(scope="module")
def clean(problem, tmp_path_factory):
    model, x = problem
    return compute(model, x, kind="entk", out=tmp_path_factory.mktemp("clean") / "k.zarr", batch_size=TILE).numpy()


@pytest.fixture
def store(problem, clean, tmp_path):
    """A complete copy of the clean store, to damage."""
    model, x = problem
    return compute(model, x, kind="entk", out=tmp_path / "k.zarr", batch_size=TILE)


def chunk(store, i, j):
    return store.path / store.array.metadata.encode_chunk_key((i, j, 0, 0))


def flip_byte(path, offset=100):
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x10
    path.write_bytes(bytes(data))


def resume(problem, store, log):
    """Rerun the call that made ``store``; return the store and the tiles it computed again."""
    model, x = problem
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        K = compute(model, x, kind="entk", out=store.path, batch_size=TILE, log_json=log)
    recomputed = {(r["i"], r["j"]) for r in map(json.loads, log.read_text().splitlines())} if log.exists() else set()
    return K, recomputed, [str(w.message) for w in caught]


FAULTS = {
    # name: (damage(store), tile damaged, the problem verify reports)
    "byte flipped": (lambda s: flip_byte(chunk(s, 0, 1)), (0, 1), "damaged"),
    "byte flipped in the mirror image": (lambda s: flip_byte(chunk(s, 2, 0), 7), (0, 2), "damaged"),
    "byte flipped in the checksum": (lambda s: flip_byte(chunk(s, 1, 1), -2), (1, 1), "damaged"),
    "garbage chunk": (
        lambda s: chunk(s, 1, 2).write_bytes(os.urandom(chunk(s, 1, 2).stat().st_size)),
        (1, 2),
        "damaged",
    ),
    "chunk deleted": (lambda s: chunk(s, 0, 0).unlink(), (0, 0), "missing"),
    "chunk truncated": (lambda s: os.truncate(chunk(s, 2, 2), 50), (2, 2), "truncated"),
    "chunk of another tile copied over": (
        lambda s: shutil.copyfile(chunk(s, 0, 1), chunk(s, 1, 2)),
        (1, 2),
        "damaged",
    ),
}


@pytest.mark.parametrize("fault", FAULTS)
def test_damage_is_detected_never_served_and_repaired(fault, problem, clean, store, tmp_path):
    damage, tile, problem_name = FAULTS[fault]
    damage(store)
    K = pntk.store.open(store.path)

    report = K.verify()
    assert not report.ok and report.damaged_tiles == [tile]
    assert problem_name in str(report.damage[0]) and f"tile {tile}" in str(report.damage[0])
    with pytest.raises(StoreCorruptError, match=re.escape(f"tile {tile}") + ".*[Rr]erun the same .*pntk verify") as err:
        K.numpy()
    assert isinstance(err.value, OSError) and isinstance(err.value, PntkError)
    row = TILE * (2 if "mirror" in fault else tile[0])  # the damaged chunk's first row
    with pytest.raises(StoreCorruptError):
        K[row]  # any read that touches the damaged chunk
    other = (1, 1) if tile == (0, 0) else (0, 0)
    block = (slice(other[0] * TILE, (other[0] + 1) * TILE), slice(other[1] * TILE, (other[1] + 1) * TILE))
    np.testing.assert_array_equal(K[block], clean[block])  # reads that miss the damage are served

    repaired, recomputed, warned = resume(problem, store, tmp_path / "log.jsonl")
    assert recomputed == {tile}
    assert any(f"tile {tile}" in w and "computed again" in w for w in warned)
    assert repaired.verify().ok and repaired.complete and repaired.attrs["complete"]
    np.testing.assert_array_equal(repaired.numpy(), clean)


def test_reads_that_miss_the_damage_still_work(store, clean):
    flip_byte(chunk(store, 2, 2))
    K = pntk.store.open(store.path)
    np.testing.assert_array_equal(K[:TILE, : 2 * TILE], clean[:TILE, : 2 * TILE])
    with pytest.raises(StoreCorruptError, match=r"tile \(2, 2\)"):
        K[-1, -1]


def test_a_deleted_chunk_makes_the_store_incomplete(store):
    chunk(store, 0, 2).unlink()
    K = pntk.store.open(store.path)
    assert not K.complete and [(t.i, t.j) for t in K.missing_tiles] == [(0, 2)]


@pytest.mark.parametrize("lost", ["ledger directory", "ledger entry garbled", ".pntk directory"])
def test_a_lost_ledger_is_rebuilt_from_what_verifies(lost, problem, clean, store, tmp_path):
    ledger = store.path / ".pntk" / "ledger"
    flip_byte(chunk(store, 1, 2))  # one damaged tile, which no rebuild may accept
    if lost == "ledger directory":
        shutil.rmtree(ledger)
    elif lost == ".pntk directory":
        shutil.rmtree(store.path / ".pntk")
    else:
        (ledger / "0-1").write_bytes(b'{"rank": 0, "chunks": {"c/0/1/0/0": {"byt')
        (ledger / "1-2").write_text("garbage")

    K = pntk.store.open(store.path)
    assert K.finished_tiles() == {(0, 0), (0, 1), (0, 2), (1, 1), (2, 2)}  # tile (1, 2) fails its own checksum
    assert not K.complete
    np.testing.assert_array_equal(K[:TILE], clean[:TILE])

    repaired, recomputed, _ = resume(problem, store, tmp_path / "log.jsonl")
    assert recomputed == {(1, 2)}
    assert {e.name for e in ledger.iterdir()} == {"0-0", "0-1", "0-2", "1-1", "1-2", "2-2"}
    assert repaired.verify().ok
    np.testing.assert_array_equal(repaired.numpy(), clean)


def test_verify_repair_forgets_damaged_tiles(store):
    chunk(store, 0, 1).unlink()
    report = KernelStore(store.path, writable=True).repair()
    assert report.damaged_tiles == [(0, 1)]
    K = pntk.store.open(store.path)
    assert K.verify().ok and [(t.i, t.j) for t in K.missing_tiles] == [(0, 1)] and not K.attrs["complete"]
    assert np.isnan(K[0, TILE]).all()  # not computed: the fill value, as documented


# --- read-only stores and a full disk -------------------------------------------------------------------


@pytest.fixture
def read_only(monkeypatch):
    """Make every directory below the returned function's argument refuse writes, as a read-only mount."""

    def protect(root):
        root = str(root)
        real_open, real_mkdir = os.open, os.mkdir

        def guarded_open(path, flags, *args, **kwargs):
            if str(path).startswith(root) and flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT):
                raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(path))
            return real_open(path, flags, *args, **kwargs)

        def guarded_mkdir(path, *args, **kwargs):
            if str(path).startswith(root) and not os.path.isdir(path):
                raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(path))
            return real_mkdir(path, *args, **kwargs)

        monkeypatch.setattr(os, "open", guarded_open)
        monkeypatch.setattr(os, "mkdir", guarded_mkdir)

    return protect


def test_a_complete_read_only_store_opens_and_is_returned(read_only, problem, clean, store):
    (store.path / ".pntk" / "lock").unlink()  # as a store copied without its lock file
    read_only(store.path)
    np.testing.assert_array_equal(pntk.store.open(store.path).numpy(), clean)
    assert pntk.store.open(store.path).verify().ok
    model, x = problem
    K = compute(model, x, kind="entk", out=store.path, batch_size=TILE)  # nothing to do: no lock needed
    np.testing.assert_array_equal(K.numpy(), clean)


def test_an_unfinished_read_only_store_says_what_to_do(read_only, problem, store):
    (store.path / ".pntk" / "lock").unlink()
    chunk(store, 0, 1).unlink()
    read_only(store.path)
    model, x = problem
    with pytest.raises(StoreError, match="read-only.*make it writable") as err:
        compute(model, x, kind="entk", out=store.path, batch_size=TILE)
    assert err.value.errno == errno.EROFS


def test_a_full_disk_says_how_much_is_needed_and_resumes(problem, clean, tmp_path, monkeypatch):
    import zarr.storage._local as local

    put, calls = local._put, []

    def put_until_full(path, value, *args, **kwargs):
        if str(path).startswith(str(tmp_path)) and "/c/" in str(path):
            calls.append(path)
            if len(calls) >= 4:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
        return put(path, value, *args, **kwargs)

    monkeypatch.setattr(local, "_put", put_until_full)
    model, x = problem
    out = tmp_path / "k.zarr"
    with pytest.raises(StoreError, match=r"disk .* is full .* about [\d.]+ [kMG]?i?B more are needed.*rerun") as err:
        compute(model, x, kind="entk", out=out, batch_size=TILE)
    assert err.value.errno == errno.ENOSPC
    monkeypatch.undo()
    K = pntk.store.open(out)
    assert 1 <= len(K.finished_tiles()) < 6 and not K.complete and K.verify().ok
    K = compute(model, x, kind="entk", out=out, batch_size=TILE)
    np.testing.assert_array_equal(K.numpy(), clean)


def test_a_store_without_checksums_is_refused(store):
    import zarr

    zarr.open_array(str(store.path), mode="r+").attrs["format"] = "pntk-kernel-store/1"
    with pytest.raises(StoreError, match="without tile checksums.*overwrite=True"):
        pntk.store.open(store.path)


def test_plain_zarr_readers_check_the_checksums_too(store):
    import zarr

    flip_byte(chunk(store, 0, 0))
    with pytest.raises(ValueError, match="checksum"):
        zarr.open_array(str(store.path), mode="r")[0, 0]
    assert torch.isfinite(torch.from_numpy(pntk.store.open(store.path)[TILE:, TILE:])).all()
