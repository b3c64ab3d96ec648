"""A stored kernel as an operator: streamed products equal the dense kernel's, the store is never read whole."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

import pntk
from pntk.operators import StoreOperator
from pntk.store import KernelStore
from zoo import make_case

TOL = 1e-12


def as_matrix(K: torch.Tensor) -> torch.Tensor:
    if K.dim() == 4:
        N1, N2, O, _ = K.shape
        return K.permute(0, 2, 1, 3).reshape(N1 * O, N2 * O)
    return K


@pytest.fixture(scope="module")
def problem():
    model, make = make_case("mlp")
    g = torch.Generator().manual_seed(0)
    return model.double(), make(11, g).double(), make(6, g).double()


@pytest.fixture(autouse=True)
def never_whole(monkeypatch):
    """Reading the whole store fails the test: products must stream tiles."""

    def refuse(self):
        raise AssertionError("the store was loaded whole")

    monkeypatch.setattr(KernelStore, "numpy", refuse)


@pytest.mark.parametrize("kind", ["pntk", "trace", "entk"])
@pytest.mark.parametrize("symmetric", [True, False])
@pytest.mark.parametrize("memory", [None, 300])
def test_store_products_equal_the_dense_kernel(problem, tmp_path, kind, symmetric, memory):
    model, x1, x2 = problem
    b = None if symmetric else x2
    K = as_matrix(pntk.kernel(model, x1, b, kind=kind))
    store = pntk.compute(model, x1, b, kind=kind, out=tmp_path / "k.zarr", batch_size=4)
    op = store.operator(memory=memory)
    assert op.shape == tuple(K.shape) and op.dtype == torch.float64
    g = torch.Generator().manual_seed(1)
    V = torch.randn(op.shape[1], 3, generator=g, dtype=torch.float64)
    U = torch.randn(op.shape[0], 2, generator=g, dtype=torch.float64)
    torch.testing.assert_close(op @ V, K @ V, rtol=0, atol=TOL * K.abs().max().item())
    torch.testing.assert_close(op.T @ U, K.T @ U, rtol=0, atol=TOL * K.abs().max().item())
    torch.testing.assert_close(store @ V[:, 0], K @ V[:, 0], rtol=0, atol=TOL * K.abs().max().item())
    if symmetric:
        torch.testing.assert_close(op.diagonal(), K.diagonal(), rtol=0, atol=0)
    else:
        with pytest.raises(ValueError, match="only a symmetric store"):
            op.diagonal()


def test_float32_store_in_float64_products(problem, tmp_path):
    model, x1, _ = problem
    model32 = copy.deepcopy(model).float()
    store = pntk.compute(model32, x1.float(), kind="pntk", out=tmp_path / "k.zarr", batch_size=5)
    op = StoreOperator(store, dtype=torch.float64)
    v = np.random.default_rng(0).standard_normal(11)
    dense = np.asarray(store.array[...], dtype=np.float64)  # the test itself may read it whole
    np.testing.assert_allclose(op @ v, dense @ v, rtol=1e-13)


def test_an_unfinished_store_is_refused(problem, tmp_path):
    model, x1, _ = problem
    store = pntk.compute(model, x1, kind="pntk", out=tmp_path / "k.zarr", batch_size=4)
    ledger = tmp_path / "k.zarr" / ".pntk" / "ledger"
    next(ledger.iterdir()).unlink()
    with pytest.raises(ValueError, match="misses 1 of 6 tiles"):
        pntk.open(tmp_path / "k.zarr").operator()
    assert store.shape == (11, 11)


@pytest.mark.parametrize("kind", ["pntk", "entk"])
def test_store_columns(problem, tmp_path, kind):
    model, x1, x2 = problem
    K = as_matrix(pntk.kernel(model, x1, x2, kind=kind))
    op = pntk.compute(model, x1, x2, kind=kind, out=tmp_path / "k.zarr", batch_size=4).operator(memory=500)
    index = torch.tensor([op.shape[1] - 1, 0, 5, 0])
    torch.testing.assert_close(op.columns(index), K[:, index], rtol=0, atol=TOL * K.abs().max().item())
