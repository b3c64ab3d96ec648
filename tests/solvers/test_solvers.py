"""Solvers against dense float64 linear algebra, on kernels of real networks given as operators and stores."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

import pntk
from pntk.analysis import gradient_flow as dense_gradient_flow
from pntk.solvers import (
    ConvergenceWarning,
    SolverOptions,
    effective_rank,
    eigsh,
    gradient_flow,
    hutchpp,
    pcg,
    ridge_regression,
    spectral_density,
)
from zoo import make_case


def as_matrix(K: torch.Tensor) -> torch.Tensor:
    if K.dim() == 4:
        N1, N2, O, _ = K.shape
        return K.permute(0, 2, 1, 3).reshape(N1 * O, N2 * O)
    return K


@pytest.fixture(scope="module")
def net():
    model, make = make_case("mlp_O10")
    g = torch.Generator().manual_seed(0)
    x, x_test = make(60, g).double(), make(9, g).double()
    Y = torch.nn.functional.one_hot(torch.randint(0, 10, (60,), generator=g), 10).double()
    return model.double(), x, x_test, Y


def spectrum(n: int, decay: float, seed: int = 0) -> torch.Tensor:
    """A random symmetric PSD matrix with eigenvalues ``decay^i``."""
    g = torch.Generator().manual_seed(seed)
    Q, _ = torch.linalg.qr(torch.randn(n, n, generator=g, dtype=torch.float64))
    return (Q * decay ** torch.arange(n, dtype=torch.float64)) @ Q.T


@pytest.mark.parametrize("kind", ["pntk", "trace", "entk"])
def test_lanczos_eigenvalues_equal_dense_eigh(net, kind):
    model, x, _, _ = net
    op = pntk.operator(model, x, kind=kind)
    dense = torch.linalg.eigvalsh(as_matrix(pntk.kernel(model, x, kind=kind))).flip(0)
    pairs = eigsh(op, 6, options=SolverOptions(tol=1e-10))
    assert pairs.converged and pairs.residuals.max() <= 1e-10 * dense[0]
    assert (pairs.eigenvalues - dense[:6]).abs().max() <= 1e-8 * dense[0]
    V = pairs.eigenvectors
    torch.testing.assert_close(V.T @ V, torch.eye(6, dtype=torch.float64), rtol=0, atol=1e-10)


def test_lanczos_smallest_and_on_a_store(net, tmp_path):
    model, x, _, _ = net
    store = pntk.compute(model, x[:40], kind="pntk", out=tmp_path / "k.zarr", batch_size=16)
    dense = torch.linalg.eigvalsh(pntk.pntk(model, x[:40]))
    top = eigsh(store, 3, options=SolverOptions(tol=1e-10))
    assert (top.eigenvalues - dense.flip(0)[:3]).abs().max() <= 1e-8 * dense[-1]
    g = torch.Generator().manual_seed(0)
    Q, _ = torch.linalg.qr(torch.randn(80, 80, generator=g, dtype=torch.float64))
    K = (Q * torch.linspace(0.1, 10, 80, dtype=torch.float64)) @ Q.T
    low = eigsh(K, 2, "SA", options=SolverOptions(tol=1e-10))
    assert low.converged
    torch.testing.assert_close(low.eigenvalues, torch.linalg.eigvalsh(K)[:2], rtol=0, atol=1e-10)


def test_lanczos_warns_when_it_stops_short():
    K = spectrum(300, 0.995)
    with pytest.warns(ConvergenceWarning, match="did not reach tol"):
        pairs = eigsh(K, 5, "SA", options=SolverOptions(maxiter=1, krylov_dim=12, block_size=2))
    assert not pairs.converged and pairs.iterations == 1


@pytest.mark.parametrize("preconditioner", ["nystrom", "pivoted_cholesky", "none"])
def test_pcg_regression_equals_the_dense_solve(net, preconditioner):
    model, x, x_test, Y = net
    K = pntk.pntk(model, x)
    ridge = 1e-3 * K.diagonal().mean().item()
    tol = 1e-10
    options = SolverOptions(tol=tol, preconditioner=preconditioner, rank=20, maxiter=2000)
    result = ridge_regression(pntk.operator(model, x), pntk.operator(model, x_test, x), Y, ridge=ridge, options=options)
    A = K + ridge * torch.eye(60, dtype=torch.float64)
    expected = pntk.pntk(model, x_test, x) @ torch.linalg.solve(A, Y)
    assert result.cg.converged and result.cg.residual.max() <= 2 * tol
    # The error of the coefficients is at most κ times the residual.
    kappa = torch.linalg.cond(A).item()
    assert (result.predictions - expected).norm() / expected.norm() <= kappa * 2 * tol
    assert result.cg.history[0] == 1.0 and result.cg.history[-1] <= tol
    assert len(result.cg.history) == result.cg.iterations + 1


def test_pcg_on_the_entk_operator(net):
    model, x, x_test, Y = net
    x, Y = x[:30], Y[:30]
    Theta = as_matrix(pntk.entk(model, x))
    ridge = 1e-2 * Theta.diagonal().mean().item()
    result = ridge_regression(
        pntk.operator(model, x, kind="entk"),
        pntk.operator(model, x_test, x, kind="entk"),
        Y,
        ridge=ridge,
        options=SolverOptions(tol=1e-11, rank=40),
    )
    coefficients = torch.linalg.solve(Theta + ridge * torch.eye(300, dtype=torch.float64), Y.reshape(-1))
    expected = (as_matrix(pntk.entk(model, x_test, x)) @ coefficients).reshape(9, 10)
    assert result.cg.converged
    torch.testing.assert_close(result.predictions, expected, rtol=0, atol=1e-7 * expected.abs().max().item())


def test_pcg_warm_start_cap_and_bad_input():
    K = spectrum(120, 0.97)
    Y = torch.randn(120, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    exact = torch.linalg.solve(K + 1e-4 * torch.eye(120, dtype=torch.float64), Y)
    warm = pcg(K, Y, ridge=1e-4, x0=exact, options=SolverOptions(tol=1e-8))
    assert warm.iterations == 0 and warm.converged
    with pytest.warns(ConvergenceWarning, match="did not reach tol"):
        short = pcg(K, Y, ridge=1e-4, options=SolverOptions(maxiter=3, preconditioner="none"))
    assert not short.converged and short.iterations == 3 and short.residual.max() > 1e-8
    with pytest.raises(ValueError, match="needs ridge > 0"):
        pcg(K, Y)
    with pytest.raises(ValueError, match="must be"):
        pcg(K, Y[:5], ridge=1.0)
    with pytest.raises(ValueError, match="tol must be positive"):
        SolverOptions(tol=0)


def test_preconditioning_cuts_the_iterations():
    K = spectrum(300, 0.95)
    Y = torch.randn(300, 1, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        plain = pcg(K, Y, ridge=1e-3, options=SolverOptions(tol=1e-8, preconditioner="none"))
    nys = pcg(K, Y, ridge=1e-3, options=SolverOptions(tol=1e-8, rank=150))
    chol = pcg(K, Y, ridge=1e-3, options=SolverOptions(tol=1e-8, rank=150, preconditioner="pivoted_cholesky"))
    assert nys.converged and chol.converged
    assert 4 * nys.iterations < plain.iterations and 4 * chol.iterations < plain.iterations


def test_hutchpp_is_exact_on_low_rank_and_unbiased_on_full_rank():
    g = torch.Generator().manual_seed(0)
    F = torch.randn(200, 5, generator=g, dtype=torch.float64)
    assert hutchpp(F @ F.T, options=SolverOptions(num_probes=30)).value == pytest.approx(
        (F * F).sum().item(), rel=1e-10
    )
    K = spectrum(200, 0.99)
    estimates = np.array([hutchpp(K, options=SolverOptions(num_probes=30, seed=s)).value for s in range(40)])
    exact = K.trace().item()
    # Unbiased: the mean of 40 estimates lies within 4 standard errors of the truth (fails for a biased one).
    assert abs(estimates.mean() - exact) <= 4 * estimates.std(ddof=1) / np.sqrt(40)
    assert np.abs(estimates - exact).max() / exact < 0.2


def matrix_function(K: torch.Tensor, f) -> torch.Tensor:
    lam, V = torch.linalg.eigh(K)
    return (V * f(lam.clamp(min=0))) @ V.T


def test_quadrature_is_exact_once_lanczos_spans_the_space(net):
    """With as many steps as eigenvalues, each probe's ``zᵀ f(K) z`` is integrated exactly: the estimate is
    Hutchinson's on the same probes, for any ``f``."""
    model, x, _, _ = net
    K = pntk.pntk(model, x)
    rho = spectral_density(pntk.operator(model, x), options=SolverOptions(num_probes=20, lanczos_steps=60, seed=3))
    g = torch.Generator().manual_seed(3)
    Z = torch.randint(0, 2, (60, 20), generator=g, dtype=torch.float64) * 2 - 1
    for f in (lambda t: t, torch.square, torch.sqrt):
        expected = (Z * (matrix_function(K, f) @ Z)).sum().item() / 20
        assert rho.trace(f) == pytest.approx(expected, rel=1e-8)
    assert rho.weights.sum().item() == pytest.approx((Z * Z).sum().item() / 20, rel=1e-10)
    sigma = 0.02 * rho.nodes.max().item()
    grid = np.linspace(-10 * sigma, rho.nodes.max().item() + 10 * sigma, 4000)
    density = rho.density(grid, sigma=sigma)
    assert np.trapezoid(density, grid) == pytest.approx(60, rel=1e-3)


def test_slq_trace_is_unbiased():
    K = spectrum(50, 0.9)
    estimates = np.array(
        [
            # One Lanczos step integrates f(t) = t exactly: zᵀ K z = ‖z‖² α_1.
            spectral_density(K, options=SolverOptions(num_probes=5, lanczos_steps=2, seed=s)).trace(lambda t: t)
            for s in range(40)
        ]
    )
    exact = K.trace().item()
    assert abs(estimates.mean() - exact) <= 4 * estimates.std(ddof=1) / np.sqrt(40)


def test_effective_rank(net):
    model, x, _, _ = net
    op = pntk.operator(model, x)
    K = pntk.pntk(model, x)
    lam = torch.linalg.eigvalsh(K).clamp(min=0)
    r = effective_rank(op, options=SolverOptions(num_probes=200, lanczos_steps=20))
    assert r.trace == pytest.approx(K.trace().item(), rel=1e-12)  # exact, from the diagonal
    assert r.lambda_max == pytest.approx(lam.max().item(), rel=1e-8)
    assert r.trace_ratio == pytest.approx((K.trace() / lam.max()).item(), rel=1e-8)
    p = lam / lam.sum()
    entropy = torch.exp(-(p[p > 0] * p[p > 0].log()).sum()).item()
    assert r.entropy == pytest.approx(entropy, rel=0.4)


@pytest.mark.parametrize("kind", ["pntk", "entk"])
def test_gradient_flow_equals_the_dense_path(net, kind):
    model, x, x_test, Y = net
    x, Y = x[:30], Y[:30]
    f0 = model(x).detach()
    f0_test = model(x_test).detach()
    t = np.array([[0.0, 0.3], [1.0, 5.0]])
    K_train = pntk.kernel(model, x, kind=kind)
    lr = 1.0 / as_matrix(K_train).diagonal().mean().item()
    dense = dense_gradient_flow(
        K_train, pntk.kernel(model, x_test, x, kind=kind), Y, t, learning_rate=lr, f0_train=f0, f0_test=f0_test
    )
    flow = gradient_flow(
        pntk.operator(model, x, kind=kind),
        pntk.operator(model, x_test, x, kind=kind),
        Y,
        t,
        learning_rate=lr,
        f0_train=f0,
        f0_test=f0_test,
        options=SolverOptions(tol=1e-10),
    )
    assert flow.converged and flow.train.shape == (2, 2, 30, 10) and flow.test.shape == (2, 2, 9, 10)
    np.testing.assert_allclose(flow.train.numpy(), dense.train, rtol=0, atol=1e-8 * np.abs(dense.train).max())
    np.testing.assert_allclose(flow.test.numpy(), dense.test, rtol=0, atol=1e-8 * np.abs(dense.test).max())


def test_gradient_flow_refuses_infinite_time_and_warns_when_short():
    K = spectrum(100, 0.97)
    Y = torch.randn(100, 1, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    with pytest.raises(ValueError, match="finite and non-negative"):
        gradient_flow(K, None, Y, np.inf)
    with pytest.warns(ConvergenceWarning, match="gradient flow did not reach"):
        flow = gradient_flow(K, None, Y, 50.0, options=SolverOptions(maxiter=5))
    assert not flow.converged and flow.steps == 5
