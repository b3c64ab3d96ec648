"""The kernel store: plain Zarr underneath, provenance, refusal of foreign stores, the writer's lock."""

import subprocess
import sys
import textwrap

import dask.array as da
import numpy as np
import pytest
import torch
import zarr

import pntk
import pntk.store
from pntk.compute import compute
from pntk.store import StoreLockedError, StoreMismatchError
from store_worker import make_problem


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    model, x = make_problem(9)
    return compute(model, x, kind="entk", out=tmp_path_factory.mktemp("s") / "k.zarr", batch_size=4)


def test_plain_zarr_and_dask_read_it(store):
    expected = store.numpy()
    z = zarr.open(str(store.path), mode="r")
    assert z.shape == (9, 9, 4, 4) and z.chunks == (4, 4, 4, 4)
    np.testing.assert_array_equal(z[...], expected)
    d = da.from_zarr(str(store.path))
    assert d.chunksize == (4, 4, 4, 4)
    np.testing.assert_array_equal(d[2:7].sum(axis=(2, 3)).compute(), expected[2:7].sum(axis=(2, 3)))
    assert z.metadata.dimension_names == ("n1", "n2", "a", "b")


def test_provenance_attributes(store):
    attrs = store.attrs
    assert (attrs["kind"], attrs["N1"], attrs["N2"], attrs["O"], attrs["dtype"]) == ("entk", 9, 9, 4, "float32")
    assert attrs["engine"] in ("jacobian", "vp", "structured") and attrs["tile"] == 4 and attrs["symmetric"]
    assert attrs["fingerprints"]["model"].startswith("sha256:") and attrs["fingerprints"]["data2"] is None
    assert attrs["versions"]["torch"] == torch.__version__ and attrs["versions"]["pntk"] == pntk.__version__
    assert attrs["complete"] is True


def test_handle_reads_like_an_array(store):
    assert store.shape == (9, 9, 4, 4) and store.ndim == 4 and len(store) == 9 and store.dtype == np.float32
    assert store.missing_tiles == [] and store.complete
    assert np.asarray(store, dtype=np.float64).dtype == np.float64
    np.testing.assert_array_equal(store[1, :, 0, 0], store.numpy()[1, :, 0, 0])
    assert store.size_on_disk() >= store.nbytes  # raw chunks (padded at the edges) plus metadata
    assert "complete" in repr(store)


def test_open_refuses_other_things(tmp_path):
    with pytest.raises(FileNotFoundError):
        pntk.store.open(tmp_path / "nothing.zarr")
    zarr.create_array(str(tmp_path / "other.zarr"), shape=(2,), dtype="f4")
    with pytest.raises(ValueError, match="not a pntk kernel store"):
        pntk.store.open(tmp_path / "other.zarr")


@pytest.mark.parametrize(
    "change, expected",
    [
        ("weights", ["model fingerprint"]),
        ("data", ["data1 fingerprint"]),
        ("kind", ["kind: store has 'entk', this call 'trace'"]),
        ("N", ["N1: store has 9, this call 8", "N2: store has 9, this call 8", "data1 fingerprint"]),
        ("tile", ["tile: store has 4, this call 3"]),
    ],
)
def test_a_different_computation_is_refused(store, change, expected):
    model, x = make_problem(9)
    kind, tile = "entk", None
    if change == "weights":
        with torch.no_grad():
            next(model.parameters())[0, 0] += 1e-3
    elif change == "data":
        x = x.clone()
        x[4, 2] += 1e-6
    elif change == "kind":
        kind = "trace"
    elif change == "N":
        x = x[:8]
    else:
        tile = 3
    with pytest.raises(StoreMismatchError, match="overwrite=True") as err:
        compute(model, x, kind=kind, out=store.path, batch_size=tile)
    differences = [line.removeprefix("  - ") for line in str(err.value).splitlines()[1:-1]]
    assert len(differences) == len(expected)
    assert all(d.startswith(e) for d, e in zip(differences, expected))


def test_resume_false_and_overwrite(tmp_path):
    model, x = make_problem(6)
    out = tmp_path / "k.zarr"
    compute(model, x, kind="pntk", out=out, batch_size=4)
    with pytest.raises(FileExistsError, match="resume=True"):
        compute(model, x, kind="pntk", out=out, resume=False)
    K = compute(model, x[:5], kind="trace", out=out, overwrite=True)
    assert K.shape == (5, 5) and K.kind.value == "trace" and K.complete
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "todo.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="not a pntk kernel store"):
        compute(model, x, kind="pntk", out=tmp_path / "notes", overwrite=True)
    assert sorted(p.name for p in (tmp_path / "notes").iterdir()) == ["todo.txt"]


def test_a_second_writer_is_refused(tmp_path):
    model, x = make_problem(6)
    out = tmp_path / "k.zarr"
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            textwrap.dedent(f"""
            import sys, time
            from pntk.store import StoreLock
            StoreLock({str(out)!r})
            print("locked", flush=True)
            time.sleep(60)
        """),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(StoreLockedError, match=f"pid {holder.pid}.*torchrun"):
            compute(model, x, kind="pntk", out=out)
    finally:
        holder.kill()
        holder.wait()
    # The kernel released the dead holder's lock.
    assert compute(model, x, kind="pntk", out=out).complete
