"""The analysis functions take pntk operators and kernel stores, give the dense answers, never load a store."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import pntk
from pntk import analysis
from pntk.store import KernelStore
from zoo import make_case


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    model, make = make_case("mlp")
    g = torch.Generator().manual_seed(0)
    model = model.double()
    x, x_test = make(40, g).double(), make(7, g).double()
    Y = torch.randn(40, 4, generator=g, dtype=torch.float64)
    out = tmp_path_factory.mktemp("store")
    train = pntk.compute(model, x, kind="pntk", out=out / "train.zarr", batch_size=16)
    cross = pntk.compute(model, x_test, x, kind="pntk", out=out / "cross.zarr", batch_size=16)
    return model, x, x_test, Y, train, cross


@pytest.fixture(autouse=True)
def never_whole(monkeypatch):
    def refuse(self):
        raise AssertionError("the store was loaded whole")

    monkeypatch.setattr(KernelStore, "numpy", refuse)


def test_extreme_eigenvalues_of_operators_and_stores(setup):
    model, x, _, _, train, _ = setup
    dense = np.linalg.eigvalsh(pntk.pntk(model, x).numpy())[::-1]
    for K in (train, pntk.operator(model, x)):
        w = analysis.extreme_eigenvalues(K, 4)
        np.testing.assert_allclose(w, dense[:4], rtol=0, atol=1e-9 * dense[0])


def test_kernel_regression_with_operators_and_stores(setup):
    model, x, x_test, Y, train, cross = setup
    K, K_cross = pntk.pntk(model, x), pntk.pntk(model, x_test, x)
    ridge = 1e-2 * K.diagonal().mean().item()
    expected = analysis.kernel_regression(K, K_cross, Y, ridge=ridge)
    for K_train, K_test in (
        (train, cross),
        (pntk.operator(model, x), pntk.operator(model, x_test, x)),
        (train, K_cross),
    ):
        got = analysis.kernel_regression(K_train, K_test, Y, ridge=ridge)
        np.testing.assert_allclose(got, expected, rtol=0, atol=1e-7 * np.abs(expected).max())
        got = analysis.kernel_regression_cg(K_train, K_test, Y, ridge=ridge, rtol=1e-11)
        np.testing.assert_allclose(got, expected, rtol=0, atol=1e-7 * np.abs(expected).max())


def test_non_convergence_follows_on_singular(setup):
    model, x, x_test, Y, train, cross = setup
    with pytest.raises(analysis.IllConditionedKernelError, match="did not reach"):
        analysis.kernel_regression_cg(train, cross, Y, ridge=0.0, rtol=1e-14, maxiter=2, on_singular="raise")


def test_gradient_flow_with_operators(setup):
    model, x, x_test, Y, train, cross = setup
    t = [0.5, 3.0]
    K = pntk.pntk(model, x)
    lr = 1 / K.diagonal().mean().item()
    expected = analysis.gradient_flow(K, pntk.pntk(model, x_test, x), Y, t, learning_rate=lr)
    got = analysis.gradient_flow(train, cross, Y, t, learning_rate=lr)
    np.testing.assert_allclose(got.train, expected.train, rtol=0, atol=1e-8 * np.abs(expected.train).max())
    np.testing.assert_allclose(got.test, expected.test, rtol=0, atol=1e-8 * np.abs(expected.test).max())


def test_dense_analyses_refuse_to_load_a_store(setup):
    model, x, _, _, train, _ = setup
    with pytest.raises(TypeError, match=r"np.asarray\(store\)"):
        analysis.eigenvalues(train)
    with pytest.raises(TypeError, match="needs the whole kernel"):
        analysis.eigenvalues(pntk.operator(model, x))
    loaded = np.asarray(train.array[...])  # loading is the user's explicit choice
    assert analysis.eigenvalues(loaded).shape == (40,)
