"""kernel_regression() and kernel_regression_cg() against dense numpy solves."""

from __future__ import annotations

import warnings
from unittest import mock

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.sparse.linalg import aslinearoperator

from pntk.analysis import (
    IllConditionedKernelError,
    IllConditionedKernelWarning,
    _linalg,
    kernel_regression,
    kernel_regression_cg,
)

from ._reference import entk_regression, gram_entk, kron_entk, matrix, psd_with_spectrum, random_psd, regression

N, M, O = 12, 5, 3


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(0)


@pytest.fixture
def scalar_problem(rng):
    """A positive definite scalar kernel on N + M inputs, targets and initial outputs."""
    K_all = random_psd(rng, N + M)
    return {
        "K_train_train": K_all[:N, :N],
        "K_test_train": K_all[N:, :N],
        "Y_train": rng.standard_normal((N, O)),
        "f0_train": rng.standard_normal((N, O)),
        "f0_test": rng.standard_normal((M, O)),
    }


@pytest.fixture
def entk_problem(rng):
    Theta, Theta_test = gram_entk(rng, N=N, M=M, O=O, P=100)
    return {
        "K_train_train": Theta,
        "K_test_train": Theta_test,
        "Y_train": rng.standard_normal((N, O)),
        "f0_train": rng.standard_normal((N, O)),
        "f0_test": rng.standard_normal((M, O)),
    }


def _reference_scalar(p, ridge=0.0):
    return regression(p["K_train_train"], p["K_test_train"], p["Y_train"], p["f0_train"], p["f0_test"], ridge)


def _reference_entk(p, ridge=0.0):
    return entk_regression(p["K_train_train"], p["K_test_train"], p["Y_train"], p["f0_train"], p["f0_test"], ridge)


@pytest.mark.parametrize("ridge", [0.0, 0.3])
def test_scalar_kernel_matches_direct_solve(scalar_problem, ridge):
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a well-conditioned kernel takes the Cholesky path, silently
        out = kernel_regression(**scalar_problem, ridge=ridge)
    assert out.shape == (M, O) and out.dtype == np.float64
    np.testing.assert_allclose(out, _reference_scalar(scalar_problem, ridge), rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("ridge", [0.0, 0.3])
def test_entk_matches_direct_flattened_solve(entk_problem, ridge):
    out = kernel_regression(**entk_problem, ridge=ridge)
    np.testing.assert_allclose(out, _reference_entk(entk_problem, ridge), rtol=1e-9, atol=1e-9)
    # The [N·O, N·O] matrix layout is the same problem.
    flat = dict(entk_problem, K_train_train=matrix(entk_problem["K_train_train"]))
    flat["K_test_train"] = matrix(entk_problem["K_test_train"])
    np.testing.assert_allclose(kernel_regression(**flat, ridge=ridge), out, rtol=1e-12, atol=1e-12)


def test_interpolates_the_train_set(scalar_problem):
    p = scalar_problem
    out = kernel_regression(p["K_train_train"], p["K_train_train"], p["Y_train"], f0_train=p["f0_train"])
    np.testing.assert_allclose(out, p["Y_train"] - p["f0_train"], atol=1e-8)  # f0_test defaults to 0


@pytest.mark.parametrize("ridge", [0.0, 0.5])
def test_scalar_kernel_equals_entk_of_its_kronecker_product(scalar_problem, ridge):
    p = scalar_problem
    kron = dict(p, K_train_train=kron_entk(p["K_train_train"], O), K_test_train=kron_entk(p["K_test_train"], O))
    np.testing.assert_allclose(
        kernel_regression(**kron, ridge=ridge), kernel_regression(**p, ridge=ridge), rtol=1e-10, atol=1e-10
    )


def test_scalar_and_entk_differ_for_a_general_entk(entk_problem):
    p = entk_problem
    pntk = dict(p, K_train_train=p["K_train_train"].mean(axis=(2, 3)), K_test_train=p["K_test_train"].mean(axis=(2, 3)))
    difference = np.abs(kernel_regression(**p) - kernel_regression(**pntk)).max()
    assert difference > 1e-3


def test_torch_inputs_and_one_dimensional_targets(scalar_problem):
    p = scalar_problem
    as_torch = {k: torch.from_numpy(v) for k, v in p.items()}
    np.testing.assert_allclose(kernel_regression(**as_torch), _reference_scalar(p), rtol=1e-9, atol=1e-9)
    one = {k: v[:, 0] if k.startswith(("Y", "f0")) else v for k, v in p.items()}
    out = kernel_regression(**one)
    assert out.shape == (M,)
    np.testing.assert_allclose(out, _reference_scalar(p)[:, 0], rtol=1e-9, atol=1e-9)


def test_input_kernel_is_untouched_unless_overwrite(scalar_problem):
    p = scalar_problem
    K0 = p["K_train_train"]
    for K in (K0.copy(), np.asfortranarray(K0), torch.from_numpy(K0.copy())):
        before = K.numpy().copy() if isinstance(K, torch.Tensor) else K.copy()
        kernel_regression(K, p["K_test_train"], p["Y_train"], ridge=0.1)
        np.testing.assert_array_equal(K.numpy() if isinstance(K, torch.Tensor) else K, before)
    K = p["K_train_train"].copy()
    out = kernel_regression(K, p["K_test_train"], p["Y_train"], overwrite_kernel=True)
    assert not np.array_equal(K, p["K_train_train"])  # factorised in place
    np.testing.assert_allclose(out, regression(p["K_train_train"], p["K_test_train"], p["Y_train"]), rtol=1e-9)


def test_singular_kernel_warns_and_returns_pseudo_inverse_result(rng):
    K_all = random_psd(rng, N + M, rank=6)  # test rows lie in the span of the train rows
    K, K_test, Y = K_all[:N, :N], K_all[N:, :N], rng.standard_normal((N, O))
    with pytest.warns(IllConditionedKernelWarning, match="pseudo-inverse"):
        out = kernel_regression(K, K_test, Y)
    expected = regression(K, K_test, Y, inverse=lambda A: np.linalg.pinv(A, rtol=1e-10, hermitian=True))
    np.testing.assert_allclose(out, expected, rtol=1e-8, atol=1e-8)
    with pytest.raises(IllConditionedKernelError, match="not positive definite|ill-conditioned"):
        kernel_regression(K, K_test, Y, on_singular="raise")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        np.testing.assert_allclose(kernel_regression(K, K_test, Y, on_singular="ignore"), out, rtol=1e-12, atol=1e-12)


def test_singular_entk_falls_back_too(rng):
    Theta, Theta_test = gram_entk(rng, N=6, M=2, O=2, P=8)  # rank 8 < N·O = 12
    Y = rng.standard_normal((6, 2))
    with pytest.warns(IllConditionedKernelWarning):
        out = kernel_regression(Theta, Theta_test, Y)
    pinv = np.linalg.pinv(matrix(Theta), rtol=1e-10, hermitian=True)
    np.testing.assert_allclose(out.reshape(-1), matrix(Theta_test) @ pinv @ Y.reshape(-1), rtol=1e-8, atol=1e-8)


def test_ill_conditioned_positive_definite_kernel_is_truncated_at_rtol(rng):
    """Cholesky succeeds, but κ ≈ 1e8 > 1/rtol: the eigenvalue 1e-8 · λ_max is discarded."""
    w = np.array([1.0, 0.7, 0.5, 0.2, 0.1, 1e-8])
    K = psd_with_spectrum(rng, w)
    K_test, Y = rng.standard_normal((4, 6)), rng.standard_normal((6, 2))
    with pytest.warns(IllConditionedKernelWarning, match="ill-conditioned"):
        out = kernel_regression(K, K_test, Y, rtol=1e-6)
    expected = regression(K, K_test, Y, inverse=lambda A: np.linalg.pinv(A, rtol=1e-6, hermitian=True))
    np.testing.assert_allclose(out, expected, rtol=1e-9, atol=1e-9)
    # At the default rtol (n·ε) the same kernel is solved exactly by Cholesky.
    np.testing.assert_allclose(kernel_regression(K, K_test, Y), regression(K, K_test, Y), rtol=1e-6)


@pytest.mark.parametrize(
    ("change", "match"),
    [
        ({"K_train_train": np.eye(N + 1)}, "K_train_train has shape"),
        ({"K_test_train": np.ones((M, N + 1))}, "K_test_train has shape"),
        ({"f0_train": np.ones((N, O + 1))}, "f0_train must have shape"),
        ({"f0_test": np.ones((M + 1, O))}, "f0_test must have shape"),
        ({"Y_train": np.ones((N, O, 1))}, "Y_train must be"),
        ({"ridge": -1.0}, "ridge must be non-negative"),
        ({"on_singular": "skip"}, "'warn', 'raise', 'ignore'"),
    ],
)
def test_argument_errors(scalar_problem, change, match):
    with pytest.raises(ValueError, match=match):
        kernel_regression(**{**scalar_problem, **change})


def test_non_finite_kernel_is_rejected(scalar_problem):
    K = scalar_problem["K_train_train"].copy()
    K[3, 4] = np.nan
    with pytest.raises(ValueError, match="NaN or inf"):
        kernel_regression(**{**scalar_problem, "K_train_train": K})


@pytest.mark.parametrize("ridge", [0.0, 0.2])
@pytest.mark.parametrize("wrap", [lambda K: K, aslinearoperator], ids=["array", "LinearOperator"])
def test_conjugate_gradients_match_direct_solve(scalar_problem, ridge, wrap):
    p = scalar_problem
    out = kernel_regression_cg(
        wrap(p["K_train_train"]), wrap(p["K_test_train"]), p["Y_train"],
        f0_train=p["f0_train"], f0_test=p["f0_test"], ridge=ridge, rtol=1e-12,
    )  # fmt: skip
    np.testing.assert_allclose(out, _reference_scalar(p, ridge), rtol=1e-7, atol=1e-7)


def test_conjugate_gradients_non_convergence(scalar_problem):
    p = {k: scalar_problem[k] for k in ("K_train_train", "K_test_train", "Y_train")}
    with pytest.warns(IllConditionedKernelWarning, match="did not reach"):
        kernel_regression_cg(**p, maxiter=1)
    with pytest.raises(IllConditionedKernelError, match="did not reach"):
        kernel_regression_cg(**p, maxiter=1, on_singular="raise")
    with pytest.raises(ValueError, match="K_train_train has shape"):
        kernel_regression_cg(np.eye(N + 1), p["K_test_train"], p["Y_train"])


@settings(max_examples=25, deadline=None)
@given(
    n=st.integers(1, 8),
    m=st.integers(1, 4),
    o=st.integers(1, 4),
    ridge=st.sampled_from([0.0, 0.1, 2.0]),
    seed=st.integers(0, 2**32 - 1),
)
def test_scalar_equals_kronecker_entk_property(n, m, o, ridge, seed):
    rng = np.random.default_rng(seed)
    K_all = random_psd(rng, n + m) + 0.1 * np.eye(n + m)
    K, K_test, Y = K_all[:n, :n], K_all[n:, :n], rng.standard_normal((n, o))
    scalar = kernel_regression(K, K_test, Y, ridge=ridge)
    entk = kernel_regression(kron_entk(K, o), kron_entk(K_test, o), Y, ridge=ridge)
    np.testing.assert_allclose(entk, scalar, atol=1e-8)
    np.testing.assert_allclose(scalar, regression(K, K_test, Y, ridge=ridge), atol=1e-8)


@pytest.mark.parametrize("n", [1, 7, 10, 23])
def test_blocked_cholesky_matches_numpy_and_keeps_the_upper_triangle(rng, n):
    A = random_psd(rng, n) + 0.1 * np.eye(n)
    work = A.copy(order="F")
    with mock.patch.object(_linalg, "_BLOCK", 3):  # several blocks, a ragged last one
        assert _linalg.cholesky_in_place(work) == 0
    np.testing.assert_allclose(np.tril(work), np.linalg.cholesky(A), rtol=1e-10, atol=1e-12)
    np.testing.assert_array_equal(np.triu(work, 1), np.triu(A, 1))


def test_blocked_cholesky_reports_the_failing_minor(rng):
    w = np.ones(9)
    A = psd_with_spectrum(rng, w)
    A[7:, :] = A[:, 7:] = 0.0  # rows and columns 7, 8 zero: the leading minor of order 8 is singular
    work = A.copy(order="F")
    with mock.patch.object(_linalg, "_BLOCK", 3):
        assert _linalg.cholesky_in_place(work) == 8
    np.testing.assert_array_equal(np.triu(work, 1), np.triu(A, 1))


def test_a_float32_operator_is_refused_below_its_rounding_with_what_to_do():
    """kernel_regression on a float32 matrix-free kernel cannot reach its default rtol = 1e-10: it says why
    (the products' rounding, not the iteration cap) and what to do; in float64 the same call succeeds."""
    import pntk

    g = torch.Generator().manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(5, 32), torch.nn.Tanh(), torch.nn.Linear(32, 3)).eval()
    x, xt = torch.randn(40, 5, generator=g), torch.randn(6, 5, generator=g)
    Y = torch.nn.functional.one_hot(torch.randint(0, 3, (40,), generator=g), 3).double()
    with pytest.raises(IllConditionedKernelError, match="rounding of the kernel's float32 products.*float64"):
        kernel_regression(pntk.operator(net, x), pntk.operator(net, xt, x), Y, ridge=1e-3, on_singular="raise")
    net64 = net.double()
    got = kernel_regression(
        pntk.operator(net64, x.double()), pntk.operator(net64, xt.double(), x.double()), Y, ridge=1e-3
    )
    K, Kt = pntk.pntk(net64, x.double()), pntk.pntk(net64, xt.double(), x.double())
    expected = Kt @ torch.linalg.solve(K + 1e-3 * torch.eye(40, dtype=torch.float64), Y)
    np.testing.assert_allclose(got, expected.numpy(), rtol=1e-7, atol=1e-9)
