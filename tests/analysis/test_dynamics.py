"""gradient_flow() against matrix exponentials, kernel regression and its t = 0 / t → ∞ limits."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from pntk.analysis import gradient_flow, kernel_regression

from . import _reference as ref

N, M, O = 10, 4, 3


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(0)


@pytest.fixture(params=["scalar", "entk"])
def problem(request, rng):
    """A positive definite train kernel with its test kernel, targets and initial outputs, both kinds."""
    if request.param == "scalar":
        K_all = ref.random_psd(rng, N + M)
        K, K_test = K_all[:N, :N], K_all[N:, :N]
    else:
        K, K_test = ref.gram_entk(rng, N=N, M=M, O=O, P=60)
    return {
        "K_train_train": K,
        "K_test_train": K_test,
        "Y_train": rng.standard_normal((N, O)),
        "f0_train": rng.standard_normal((N, O)),
        "f0_test": rng.standard_normal((M, O)),
    }


def _reference(p: dict, eta: float, t: float) -> tuple[np.ndarray, np.ndarray]:
    """The flow via expm of the explicit matrices; a scalar kernel acts on each output column."""
    K, K_test = p["K_train_train"], p["K_test_train"]
    Y, f0, f0_test = p["Y_train"], p["f0_train"], p["f0_test"]
    if K.ndim == 2:
        return ref.gradient_flow(K, K_test, Y, f0, f0_test, eta, t)
    column = ref.column
    train, test = ref.gradient_flow(ref.matrix(K), ref.matrix(K_test), column(Y), column(f0), column(f0_test), eta, t)
    return train.reshape(N, O), test.reshape(M, O)


@pytest.mark.parametrize(("eta", "t"), [(1.0, 0.3), (0.5, 2.0), (2.0, 7.0)])
def test_matches_matrix_exponential(problem, eta, t):
    flow = gradient_flow(**problem, t=t, learning_rate=eta)
    train, test = _reference(problem, eta, t)
    assert flow.train.shape == (N, O) and flow.test.shape == (M, O)
    np.testing.assert_allclose(flow.train, train, rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(flow.test, test, rtol=1e-9, atol=1e-9)


def test_time_zero_is_initialisation(problem):
    flow = gradient_flow(**problem, t=0.0)
    np.testing.assert_array_equal(flow.train, problem["f0_train"])
    np.testing.assert_allclose(flow.test, problem["f0_test"], atol=1e-12)


def test_long_time_is_kernel_regression(problem):
    regression = kernel_regression(**problem)
    K = problem["K_train_train"]
    lambda_min = np.linalg.eigvalsh(ref.matrix(K) if K.ndim == 4 else K)[0]
    flow = gradient_flow(**problem, t=[60.0 / lambda_min, np.inf])  # e^{-60} is below rounding
    for i in range(2):
        np.testing.assert_allclose(flow.train[i], problem["Y_train"], atol=1e-9)
        np.testing.assert_allclose(flow.test[i], regression, rtol=1e-8, atol=1e-8)


def test_array_of_times_equals_one_call_per_time(problem):
    times = np.array([[0.0, 0.5], [1.5, 4.0]])
    flow = gradient_flow(**problem, t=times, learning_rate=0.7)
    assert flow.train.shape == (2, 2, N, O) and flow.test.shape == (2, 2, M, O)
    for index in np.ndindex(times.shape):
        single = gradient_flow(**problem, t=times[index], learning_rate=0.7)
        np.testing.assert_allclose(flow.train[index], single.train, rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(flow.test[index], single.test, rtol=1e-12, atol=1e-12)


def test_singular_kernel_has_finite_linear_growth_on_null_modes(rng):
    """On the null space Θ⁻¹(I − e^{−ηΘt}) → ηt: compare with the inverse-free Van Loan reference."""
    K = ref.random_psd(rng, N, rank=4)
    K_test = rng.standard_normal((M, N))  # not in the span: the null modes show on the test set
    Y, f0, f0_test = rng.standard_normal((N, O)), rng.standard_normal((N, O)), np.zeros((M, O))
    for t in (0.5, 3.0):
        flow = gradient_flow(K, K_test, Y, t, learning_rate=0.8, f0_train=f0)
        train, test = ref.gradient_flow(K, K_test, Y, f0, f0_test, 0.8, t)
        np.testing.assert_allclose(flow.train, train, rtol=1e-8, atol=1e-8)
        np.testing.assert_allclose(flow.test, test, rtol=1e-8, atol=1e-8)


def test_singular_kernel_at_infinite_time_is_pseudo_inverse_regression(rng):
    K_all = ref.random_psd(rng, N + M, rank=5)
    K, K_test, Y = K_all[:N, :N], K_all[N:, :N], rng.standard_normal((N, O))
    flow = gradient_flow(K, K_test, Y, np.inf)
    assert np.isfinite(flow.test).all()
    expected = ref.regression(K, K_test, Y, inverse=lambda A: np.linalg.pinv(A, rtol=1e-10, hermitian=True))
    np.testing.assert_allclose(flow.test, expected, rtol=1e-8, atol=1e-8)
    projection = K @ np.linalg.pinv(K, rtol=1e-10, hermitian=True)
    np.testing.assert_allclose(flow.train, projection @ Y, atol=1e-8)  # fits only the range of K


def test_scalar_kernel_equals_kronecker_entk(rng):
    K_all = ref.random_psd(rng, N + M)
    Y, f0 = rng.standard_normal((N, O)), rng.standard_normal((N, O))
    t = np.array([0.1, 1.0, 10.0])
    scalar = gradient_flow(K_all[:N, :N], K_all[N:, :N], Y, t, f0_train=f0)
    entk = gradient_flow(ref.kron_entk(K_all[:N, :N], O), ref.kron_entk(K_all[N:, :N], O), Y, t, f0_train=f0)
    np.testing.assert_allclose(entk.train, scalar.train, atol=1e-10)
    np.testing.assert_allclose(entk.test, scalar.test, atol=1e-10)


def test_train_only_torch_and_one_dimensional_targets(rng):
    K = ref.random_psd(rng, N)
    y = rng.standard_normal(N)
    flow = gradient_flow(torch.from_numpy(K).float(), None, torch.from_numpy(y), [0.0, 1.0])
    assert flow.test is None and flow.train.shape == (2, N) and flow.train.dtype == np.float64
    K32 = torch.from_numpy(K).float().double().numpy()
    train, _ = ref.gradient_flow(K32, np.zeros((1, N)), y[:, None], np.zeros((N, 1)), np.zeros((1, 1)), 1.0, 1.0)
    np.testing.assert_allclose(flow.train[1], train[:, 0], rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [({"t": -1.0}, "non-negative"), ({"t": np.nan}, "non-negative"), ({"t": 1.0, "learning_rate": 0.0}, "positive")],
)
def test_argument_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        gradient_flow(np.eye(3), None, np.ones((3, 1)), **kwargs)


@settings(max_examples=25, deadline=None)
@given(n=st.integers(1, 7), o=st.integers(1, 3), rank=st.integers(1, 7), seed=st.integers(0, 2**32 - 1))
def test_flow_interpolates_between_f0_and_targets_property(n, o, rank, seed):
    """For any PSD kernel: f_0 = f0 at t = 0, and ‖f_t(X) − Y‖ never grows along the flow."""
    rng = np.random.default_rng(seed)
    K = ref.random_psd(rng, n, rank=min(rank, n))
    Y, f0 = rng.standard_normal((n, o)), rng.standard_normal((n, o))
    flow = gradient_flow(K, None, Y, [0.0, 0.5, 2.0, 20.0], f0_train=f0)
    np.testing.assert_array_equal(flow.train[0], f0)
    losses = np.linalg.norm(flow.train - Y, axis=(1, 2))
    assert np.all(np.diff(losses) <= 1e-12 * (1 + losses[0]))
