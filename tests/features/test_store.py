"""Features out of core: a feature store holds exactly the rows pntk.features gives, resumes bit-identically
after a kill, 2 torchrun ranks write what 1 process writes, damage is detected and computed again, and the
store streams into FeatureKernel and FeatureRidge as the tensor does."""

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from feature_store_worker import TILE, K, make_problem

import pntk
from pntk.errors import StoreCorruptError, StoreError, StoreMismatchError
from pntk.features import FeatureKernel, FeatureRidge, FeatureStore

WORKER = Path(__file__).parent / "feature_store_worker.py"


def one_thread(f, *args, **kwargs):
    """``f(...)`` with one thread, as each worker process runs."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return f(*args, **kwargs)
    finally:
        torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def clean(tmp_path_factory):
    """The store one uninterrupted process writes, with the workers' settings."""
    model, x = make_problem()
    out = tmp_path_factory.mktemp("clean") / "phi.zarr"
    return one_thread(pntk.compute_features, model, x, k=K, seed=3, out=out, batch_size=TILE).numpy()


@pytest.mark.parametrize("kind", ["pntk", "trace", "entk"])
@pytest.mark.parametrize("method", ["kronecker", "dense"])
def test_the_store_holds_the_rows_of_features_bit_for_bit(kind, method, tmp_path):
    model, x = make_problem()
    store = pntk.compute_features(model, x, k=K, kind=kind, method=method, seed=3, out=tmp_path / "p", batch_size=4)
    Phi = pntk.features(model, x, k=K, kind=kind, method=method, seed=3, batch_size=4)
    assert store.complete and store.attrs["complete"] and store.shape == tuple(Phi.shape)
    assert store.spec.tile == 4 and len(store.spec.plan()) == 6
    np.testing.assert_array_equal(store.numpy(), Phi.numpy())
    assert isinstance(pntk.open(tmp_path / "p"), FeatureStore)


def test_rows_agree_for_any_batch_size(tmp_path):
    """Another block length changes only the order BLAS sums in: rows agree to rounding (float64)."""
    model, x = make_problem()
    stores = [
        pntk.compute_features(model, x, k=K, kind="entk", seed=3, out=tmp_path / f"p{b}", batch_size=b).numpy()
        for b in (1, 5, 23)
    ]
    for other in stores[1:]:
        np.testing.assert_allclose(other, stores[0], rtol=1e-12, atol=1e-14)


def test_a_store_of_another_map_is_refused(tmp_path, clean):
    model, x = make_problem()
    out = tmp_path / "phi.zarr"
    pntk.compute_features(model, x, k=K, seed=3, out=out, batch_size=TILE)
    with pytest.raises(StoreMismatchError, match="seed: store has 3, this call 4"):
        pntk.compute_features(model, x, k=K, seed=4, out=out)
    with pytest.raises(StoreMismatchError, match="data fingerprint"):
        pntk.compute_features(model, x[:-1], k=K, seed=3, out=out)
    with pytest.raises(FileExistsError, match="not a pntk kernel store"):
        pntk.compute(model, x, kind="pntk", out=out)
    with pytest.raises(ValueError, match="Nyström"):
        pntk.compute_features(model, x, k=K, method="nystrom", out=tmp_path / "n.zarr")
    # The same call with no batch_size resumes the store as it is.
    np.testing.assert_array_equal(pntk.compute_features(model, x, k=K, seed=3, out=out).numpy(), clean)


def test_a_kill_after_some_blocks_resumes_bit_identical(tmp_path, clean):
    out = tmp_path / "phi.zarr"
    crashed = subprocess.run([sys.executable, str(WORKER), str(out), "--die-after", "2"], timeout=120)
    assert crashed.returncode == -signal.SIGKILL
    interrupted = pntk.open(out)
    assert len(interrupted.finished_tiles()) == 2 and not interrupted.complete and interrupted.verify().ok
    with pytest.raises(StoreError, match="misses 3 of 5 blocks"):
        next(interrupted.blocks())
    model, x = make_problem()
    log = tmp_path / "log.jsonl"
    resumed = one_thread(pntk.compute_features, model, x, k=K, seed=3, out=out, batch_size=TILE, log_json=log)
    assert resumed.complete and resumed.verify().ok
    assert sorted(json.loads(line)["i"] for line in log.read_text().splitlines()) == [2, 3, 4]
    np.testing.assert_array_equal(resumed.numpy(), clean)


@pytest.mark.parametrize("seed", [0, 1])
def test_a_kill_at_a_random_point_resumes_bit_identical(seed, tmp_path, clean):
    """SIGKILL after a random number of finished blocks and a random delay (mid-sketch or mid-write)."""
    rng = random.Random(seed)
    out, sleep = tmp_path / "phi.zarr", 0.1
    ledger = out / ".pntk" / "ledger"
    after, delay = rng.randint(1, 4), rng.uniform(0, sleep + 0.05)
    child = subprocess.Popen([sys.executable, str(WORKER), str(out), "--sleep", str(sleep)])
    try:
        deadline = time.monotonic() + 120
        while not (ledger.is_dir() and len(os.listdir(ledger)) >= after):
            assert child.poll() is None and time.monotonic() < deadline, "the worker ended before the kill"
            time.sleep(0.005)
        time.sleep(delay)
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()
    assert pntk.open(out).verify().ok  # what was recorded is intact
    model, x = make_problem()
    resumed = one_thread(pntk.compute_features, model, x, k=K, seed=3, out=out, batch_size=TILE)
    assert resumed.complete and not list(out.rglob("*.partial"))
    np.testing.assert_array_equal(resumed.numpy(), clean)


def torchrun(out, *options):
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2"]
    return subprocess.run([*command, str(WORKER), str(out), *options], capture_output=True, text=True, timeout=180)


def test_two_ranks_write_what_one_process_writes(tmp_path, clean):
    run = torchrun(tmp_path / "phi.zarr")
    assert run.returncode == 0, run.stderr[-3000:]
    store = pntk.open(tmp_path / "phi.zarr")
    assert store.complete and store.attrs["complete"]
    ranks = {json.loads(e.read_text())["rank"] for e in (tmp_path / "phi.zarr" / ".pntk" / "ledger").iterdir()}
    assert ranks == {0, 1}
    np.testing.assert_array_equal(store.numpy(), clean)


def test_ranks_with_other_weights_stop_before_writing(tmp_path):
    run = torchrun(tmp_path / "phi.zarr", "--differ-rank", "1")
    assert run.returncode != 0
    assert "rank 1: the model's parameter or buffer '2.weight' differs from rank 0's" in run.stderr
    assert not (tmp_path / "phi.zarr" / "zarr.json").exists()


def test_a_damaged_chunk_is_detected_and_computed_again(tmp_path, clean):
    model, x = make_problem()
    out = tmp_path / "phi.zarr"
    store = one_thread(pntk.compute_features, model, x, k=K, seed=3, out=out, batch_size=TILE)
    chunk = out / "c" / "2" / "0"
    data = bytearray(chunk.read_bytes())
    data[100] ^= 0x01  # one flipped bit inside row 10's features
    chunk.write_bytes(bytes(data))
    with pytest.raises(StoreCorruptError, match=r"tile \(2, 0\)"):
        store[10:11]
    np.testing.assert_array_equal(store[:10], clean[:10])  # other blocks still read
    report = store.verify()
    assert not report.ok and report.damaged_tiles == [(2, 0)]
    verify = subprocess.run([sys.executable, "-m", "pntk", "verify", str(out)], capture_output=True, text=True)
    assert verify.returncode == 1 and "pntk features --out" in verify.stdout, verify.stdout + verify.stderr
    with pytest.warns(UserWarning, match=r"1 finished tiles were damaged"):
        resumed = one_thread(pntk.compute_features, model, x, k=K, seed=3, out=out, batch_size=TILE)
    assert resumed.verify().ok
    np.testing.assert_array_equal(resumed.numpy(), clean)


@pytest.mark.parametrize("kind", ["pntk", "entk"])
def test_feature_kernel_and_ridge_stream_a_store_as_they_use_the_tensor(kind, tmp_path):
    model, x = make_problem()
    store = pntk.compute_features(model, x, k=K, kind=kind, seed=3, out=tmp_path / "p", batch_size=4)
    Phi = torch.from_numpy(store.numpy())
    streamed, whole = FeatureKernel(store), FeatureKernel(Phi)
    assert streamed.shape == whole.shape and streamed.dtype == torch.float64
    V = torch.randn(whole.shape[1], 2, dtype=torch.float64)
    torch.testing.assert_close(streamed @ V, whole @ V, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(streamed.diagonal(), whole.diagonal(), rtol=1e-12, atol=0)
    torch.testing.assert_close(streamed.gram(), whole.gram(), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(streamed.eigenvalues(), whole.eigenvalues(), rtol=1e-9, atol=1e-10)
    v = np.random.default_rng(0).standard_normal(whole.shape[1])
    np.testing.assert_allclose(streamed.to_scipy() @ v, whole.to_scipy() @ v, rtol=1e-12)
    np.testing.assert_allclose(streamed.to_scipy().T @ v, whole.to_scipy().T @ v, rtol=1e-12)
    Y = torch.randn(len(x), 3, dtype=torch.float64)
    fitted, reference = FeatureRidge(0.1).fit(store, Y), FeatureRidge(0.1).fit(Phi, Y)
    np.testing.assert_allclose(fitted.coef, reference.coef, rtol=1e-10)
    np.testing.assert_allclose(fitted.predict(store), reference.predict(Phi), rtol=1e-10)
    with pytest.raises(ValueError, match="holds features of 23 samples"):
        FeatureRidge(0.1).fit(store, Y[:5])


def first_two(y):
    return y[:, :2]


def last_two(y):
    return y[:, 1:]


def test_the_store_sketches_the_selected_parameters_and_outputs_and_records_them(tmp_path):
    """params= and output= reach the stored features as they reach pntk.features, and a rerun that selects
    other parameters or outputs is refused rather than mixed into the store."""
    model, x = make_problem()
    chosen = {"params": ["2.*"], "output": first_two}
    store = pntk.compute_features(model, x, k=K, seed=3, out=tmp_path / "p", batch_size=4, **chosen)
    Phi = pntk.features(model, x, k=K, seed=3, batch_size=4, **chosen)
    np.testing.assert_array_equal(store.numpy(), Phi.numpy())
    whole = pntk.features(model, x, k=K, seed=3, batch_size=4)
    assert not np.allclose(store.numpy(), whole.numpy()), "the selection changed nothing"
    assert store.spec.params is not None and store.spec.output is not None and "first_two" in store.spec.output
    with pytest.raises(StoreMismatchError, match="output selection"):
        pntk.compute_features(model, x, k=K, seed=3, out=tmp_path / "p", params=["2.*"], output=last_two)
    with pytest.raises(StoreMismatchError, match="params selection"):
        pntk.compute_features(model, x, k=K, seed=3, out=tmp_path / "p", output=first_two)
