"""compare() on kernels it cannot hold: stores are streamed by rows, operators give their rows by products, and
every field equals the dense comparison's (float64)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import pntk
from pntk.analysis import compare
from pntk.store import KernelStore
from zoo import make_case

NORM_FIELDS = ("norm_Theta", "error", "diagonal_error", "off_diagonal_error", "relative_error")


@pytest.fixture(scope="module")
def problem():
    model, make = make_case("mlp")
    g = torch.Generator().manual_seed(0)
    return model.double(), make(9, g).double(), make(5, g).double()


@pytest.fixture(autouse=True)
def never_whole(monkeypatch):
    def refuse(self):
        raise AssertionError("the store was loaded whole")

    monkeypatch.setattr(KernelStore, "numpy", refuse)


def kernels(model, x1, x2, where, tmp_path):
    """Θ and K as stores, operators or dense tensors."""
    out = {}
    for kind in ("entk", "pntk"):
        if where == "store":
            out[kind] = pntk.compute(model, x1, x2, kind=kind, out=tmp_path / f"{kind}.zarr", batch_size=4)
        elif where == "operator":
            out[kind] = pntk.operator(model, x1, x2, kind=kind)
        else:
            out[kind] = pntk.kernel(model, x1, x2, kind=kind)
    return out["entk"], out["pntk"]


@pytest.mark.parametrize("where", ["store", "operator", "mixed"])
@pytest.mark.parametrize("symmetric", [True, False])
def test_matrix_free_comparison_equals_the_dense_one(problem, tmp_path, where, symmetric):
    model, x1, x2 = problem
    b = None if symmetric else x2
    dense = compare(*kernels(model, x1, b, "dense", tmp_path), spectrum=False)
    Theta, K = kernels(model, x1, b, "store" if where == "mixed" else where, tmp_path)
    if where == "mixed":  # a stored eNTK against a pNTK operator
        K = pntk.operator(model, x1, b, kind="pntk")
    result = compare(Theta, K)
    assert (result.N1, result.N2, result.O) == (dense.N1, dense.N2, dense.O)
    for field in NORM_FIELDS:
        np.testing.assert_allclose(getattr(result, field), getattr(dense, field), rtol=1e-10, err_msg=field)
    assert result.lambda_max_Theta is None, "no spectrum unless asked"


def test_spectral_fields_by_lanczos_equal_dense_ones(problem, tmp_path):
    model, x1, _ = problem
    dense = compare(*kernels(model, x1, None, "dense", tmp_path), spectrum=True)
    result = compare(*kernels(model, x1, None, "store", tmp_path), spectrum=True)
    for name in ("lambda_max_Theta", "lambda_max_K", "lambda_min_Theta", "lambda_min_K"):
        np.testing.assert_allclose(getattr(result, name), getattr(dense, name), rtol=1e-7, err_msg=name)


def test_mismatched_matrix_free_kernels_are_refused(problem, tmp_path):
    model, x1, x2 = problem
    Theta = pntk.operator(model, x1, kind="entk")
    with pytest.raises(ValueError, match="Theta must be"):
        compare(Theta, pntk.operator(model, x2, kind="pntk"))
    with pytest.raises(ValueError, match="spectrum=True needs a square kernel"):
        compare(pntk.operator(model, x1, x2, kind="entk"), pntk.operator(model, x1, x2, kind="pntk"), spectrum=True)
