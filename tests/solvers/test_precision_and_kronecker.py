"""Mixed precision (float32 products, float64 refinement) and the Kronecker preconditioner of the eNTK, against
dense float64 linear algebra."""

from __future__ import annotations

import copy
import warnings

import pytest
import torch

import pntk
from pntk.solvers import ConvergenceWarning, SolverOptions, eigsh, kronecker, pcg, ridge_regression
from zoo import make_case

F64 = torch.float64


def as_matrix(Theta: torch.Tensor) -> torch.Tensor:
    N1, N2, O, _ = Theta.shape
    return Theta.permute(0, 2, 1, 3).reshape(N1 * O, N2 * O)


@pytest.fixture(scope="module")
def pair():
    """The same network and inputs twice: float32, and float64 holding exactly the float32 numbers."""
    model, make = make_case("mlp_O10")
    g = torch.Generator().manual_seed(0)
    x32, xt32 = make(80, g).float(), make(9, g).float()
    m32 = copy.deepcopy(model).float()
    m64 = copy.deepcopy(m32).double()
    Y = torch.nn.functional.one_hot(torch.randint(0, 10, (80,), generator=g), 10).to(F64)
    return m32, m64, x32, xt32, Y


def test_refinement_reaches_the_float64_solve_that_float32_alone_misses(pair):
    m32, m64, x, xt, Y = pair
    K = pntk.pntk(m64, x.double())
    ridge = 1e-4 * K.diagonal().mean().item()
    expected = pntk.pntk(m64, xt.double(), x.double()) @ torch.linalg.solve(K + ridge * torch.eye(80, dtype=F64), Y)
    options = SolverOptions(tol=1e-9, rank=20, maxiter=3000)
    op32, cross32 = pntk.operator(m32, x), pntk.operator(m32, xt, x)
    op64, cross64 = pntk.operator(m64, x.double()), pntk.operator(m64, xt.double(), x.double())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        alone = ridge_regression(op32, cross32, Y, ridge=ridge, options=options)
    refined = ridge_regression(op32, cross32, Y, ridge=ridge, options=options, exact=op64, exact_test=cross64)

    def error(r):
        return ((r.predictions - expected).norm() / expected.norm()).item()

    # float32 products alone leave the true residual far above tol; refinement reaches it.
    assert alone.cg.residual.max() > 1e-7
    assert refined.cg.converged and refined.cg.residual.max() <= 1e-9 and refined.cg.refinements >= 2
    kappa = torch.linalg.cond(K + ridge * torch.eye(80, dtype=F64)).item()
    assert error(refined) <= kappa * 1e-9 and error(refined) < 1e-8 and error(refined) < error(alone) / 100
    # The residual that refinement reports is the float64 operator's: recomputed here densely, it holds.
    W = refined.coefficients
    true = (Y - (K + ridge * torch.eye(80, dtype=F64)) @ W).norm(dim=0) / Y.norm(dim=0)
    assert (true <= 1.1e-9).all()


def test_refinement_stops_when_it_no_longer_helps_and_checks_shapes():
    g = torch.Generator().manual_seed(0)
    Q, _ = torch.linalg.qr(torch.randn(50, 50, generator=g, dtype=F64))
    K = (Q * 0.8 ** torch.arange(50, dtype=F64)) @ Q.T
    Y = torch.randn(50, 2, generator=g, dtype=F64)
    # A float32 copy of a *different* matrix: refinement cannot reach tol and must say so.
    wrong = (K * 1.01).float()
    with pytest.warns(ConvergenceWarning, match="did not reach tol"):
        r = pcg(wrong, Y, ridge=1e-3, exact=K * 1.3, options=SolverOptions(tol=1e-14, maxiter=400))
    assert not r.converged
    with pytest.raises(ValueError, match="exact must have"):
        pcg(K.float(), Y, ridge=1e-3, exact=K[:10, :10])


def test_rayleigh_ritz_with_the_float64_operator(pair):
    m32, m64, x, _, _ = pair
    dense = torch.linalg.eigvalsh(pntk.pntk(m64, x.double())).flip(0)[:5]
    options = SolverOptions(tol=1e-6)
    alone = eigsh(pntk.operator(m32, x), 5, options=options)
    refined = eigsh(pntk.operator(m32, x), 5, options=options, exact=pntk.operator(m64, x.double()))
    err_alone = ((alone.eigenvalues - dense).abs() / dense).max().item()
    err_refined = ((refined.eigenvalues - dense).abs() / dense).max().item()
    assert err_refined <= 1e-11 and err_refined < err_alone / 100
    assert refined.products == alone.products + 5
    assert (refined.residuals <= 1e-5 * dense[0]).all()


def test_kronecker_preconditioner_is_spd_and_exact_for_a_kronecker_kernel():
    g = torch.Generator().manual_seed(0)
    N, O, ridge = 30, 4, 1e-2
    F = torch.randn(N, 8, generator=g, dtype=F64)
    K = F @ F.T + 0.1 * torch.eye(N, dtype=F64)
    eye = torch.eye(N * O, dtype=F64)
    Theta = torch.kron(K, torch.eye(O, dtype=F64))
    for rank in (5, N):
        M = kronecker(K, O, ridge, rank=rank)
        P = M(eye)
        torch.testing.assert_close(P, P.T, rtol=0, atol=1e-12)
        assert torch.linalg.eigvalsh((P + P.T) / 2).min() > 0
    # Full rank on K ⊗ I: P⁻¹ is (Θ + λI)⁻¹ up to a positive scalar, and CG is done in one iteration.
    PA = P @ (Theta + ridge * eye)
    assert PA[0, 0] > 0
    torch.testing.assert_close(PA / PA[0, 0], eye, rtol=0, atol=1e-9)
    Y = torch.randn(N * O, 1, generator=g, dtype=F64)
    r = pcg(Theta, Y, ridge=ridge, preconditioner=M, options=SolverOptions(tol=1e-10))
    assert r.converged and r.iterations == 1
    for preconditioner in ("nystrom", "pivoted_cholesky"):
        M = kronecker(K, O, ridge, rank=N, preconditioner=preconditioner)
        Z, W = M(Y), torch.linalg.solve(Theta + ridge * eye, Y)
        torch.testing.assert_close(Z / Z.norm(), W / W.norm(), rtol=0, atol=1e-8)
    with pytest.raises(ValueError, match="wraps"):
        kronecker(K, O, ridge, rank=3, preconditioner="none")


def test_kronecker_preconditioned_entk_regression_equals_dense_and_cuts_iterations():
    # A wide network, where Θ ≈ K ⊗ I holds (the pNTK paper's regime; at width 8 it does not, and the
    # Kronecker preconditioner is no better than none).
    g = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    nn = torch.nn
    m64 = nn.Sequential(nn.Linear(5, 256), nn.ReLU(), nn.Linear(256, 256), nn.ReLU(), nn.Linear(256, 10)).double()
    x, xt = torch.randn(80, 5, generator=g, dtype=F64), torch.randn(9, 5, generator=g, dtype=F64)
    Y = torch.nn.functional.one_hot(torch.randint(0, 10, (80,), generator=g), 10).to(F64)
    Theta = as_matrix(pntk.entk(m64, x))
    ridge = 1e-3 * Theta.diagonal().mean().item()
    op, cross = pntk.operator(m64, x, kind="entk"), pntk.operator(m64, xt, x, kind="entk")
    coefficients = torch.linalg.solve(Theta + ridge * torch.eye(800, dtype=F64), Y.reshape(-1))
    expected = (as_matrix(pntk.entk(m64, xt, x)) @ coefficients).reshape(9, 10)
    tol = 1e-10
    fits = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)  # plain CG may stop at its cap: that is the point
        for p in ("kronecker", "none"):
            options = SolverOptions(tol=tol, rank=40, preconditioner=p, maxiter=2000)
            fits[p] = ridge_regression(op, cross, Y, ridge=ridge, options=options)
    kappa = torch.linalg.cond(Theta + ridge * torch.eye(800, dtype=F64)).item()
    fit = fits["kronecker"]
    assert fit.cg.converged
    assert (fit.predictions - expected).norm() / expected.norm() <= kappa * 2 * tol
    assert 3 * fit.cg.iterations < fits["none"].cg.iterations
    with pytest.raises(ValueError, match="needs an eNTK operator"):
        pcg(pntk.operator(m64, x), Y, ridge=ridge, options=SolverOptions(preconditioner="kronecker"))


def test_the_kronecker_option_factors_the_trace_ntk_which_beats_the_pntk():
    """``Θ ≈ K ⊗ I_O`` is nearest in Frobenius norm for the trace NTK, the mean of Θ's diagonal blocks; where
    the off-diagonal blocks are not small (width 64), its factor cuts PCG's iterations against the pNTK's."""
    g = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    nn = torch.nn
    m64 = nn.Sequential(nn.Linear(5, 64), nn.ReLU(), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 10)).double()
    x = torch.randn(80, 5, generator=g, dtype=F64)
    y = torch.nn.functional.one_hot(torch.randint(0, 10, (80,), generator=g), 10).to(F64).reshape(-1)
    Theta = pntk.entk(m64, x)  # [N, N, O, O]
    diagonal_mean = Theta.diagonal(dim1=2, dim2=3).mean(-1)
    torch.testing.assert_close(pntk.kernel(m64, x, kind="trace"), diagonal_mean, rtol=1e-12, atol=1e-12)
    op = pntk.operator(m64, x, kind="entk")
    ridge = 1e-3 * op.diagonal().mean().item()
    options = SolverOptions(tol=1e-10, maxiter=3000, preconditioner="none")
    iterations = {}
    for kind in ("trace", "pntk"):
        M = kronecker(pntk.operator(m64, x, kind=kind), 10, ridge, rank=40)
        run = pcg(op, y, ridge=ridge, preconditioner=M, options=options)
        assert run.converged
        iterations[kind] = run.iterations
    option = pcg(
        op, y, ridge=ridge, options=SolverOptions(tol=1e-10, maxiter=3000, rank=40, preconditioner="kronecker")
    )
    assert option.iterations == iterations["trace"]
    by_default = pcg(op, y, ridge=ridge, options=SolverOptions(tol=1e-10, maxiter=3000, rank=40))  # "auto"
    assert by_default.iterations == iterations["trace"]
    assert iterations["trace"] < 0.8 * iterations["pntk"]  # 197 against 282 when written


def test_with_kind_gives_the_pntk_beside_the_entk(pair):
    _, m64, x, xt, _ = pair
    x, xt = x.double(), xt.double()
    V = torch.randn(80, 3, dtype=F64, generator=torch.Generator().manual_seed(2))
    pntk_op = pntk.operator(m64, x, kind="entk").with_kind("pntk")
    torch.testing.assert_close(pntk_op @ V, pntk.pntk(m64, x) @ V, rtol=1e-10, atol=1e-10)
    cross = pntk.operator(m64, xt, x, kind="entk").with_kind("trace")
    torch.testing.assert_close(cross @ V, pntk.kernel(m64, xt, x, kind="trace") @ V, rtol=1e-10, atol=1e-10)


def test_the_default_preconditioner_and_its_stand_in_for_an_operator_without_a_diagonal():
    from pntk.operators import LinearOperator

    class ProductsOnly(LinearOperator):
        def __init__(self, M: torch.Tensor) -> None:
            super().__init__(tuple(M.shape), M.dtype, M.device)
            self.M = M

        def _matmat(self, V: torch.Tensor) -> torch.Tensor:
            return self.M @ V

    g = torch.Generator().manual_seed(0)
    Q, _ = torch.linalg.qr(torch.randn(200, 200, generator=g, dtype=F64))
    K = (Q * 0.95 ** torch.arange(200, dtype=F64)) @ Q.T
    Y = torch.randn(200, 2, generator=g, dtype=F64)
    expected = torch.linalg.solve(K + 1e-4 * torch.eye(200, dtype=F64), Y)
    options = SolverOptions(tol=1e-10, rank=100)
    assert SolverOptions().preconditioner == "auto"  # pivoted Cholesky for a scalar kernel
    plain = pcg(K, Y, ridge=1e-4, options=SolverOptions(tol=1e-10, preconditioner="none"))
    for op in (K, ProductsOnly(K)):  # pivoted Cholesky; Nyström for the operator that has no diagonal
        r = pcg(op, Y, ridge=1e-4, options=options)
        assert r.converged and 2 * r.iterations < plain.iterations
        torch.testing.assert_close(r.solution, expected, rtol=0, atol=1e-6 * expected.abs().max().item())
    with pytest.raises(NotImplementedError):
        ProductsOnly(K).diagonal()


def test_a_float32_kernel_gets_a_float32_preconditioner_as_good_as_a_float64_one():
    """Pivoted Cholesky of a float32 kernel stores its factor in float32 (half the memory); its eigenbasis is
    orthonormal to rounding and it needs as many iterations as the float64 factor of the same columns."""
    from pntk.solvers import pivoted_cholesky

    model, make = make_case("mlp_O10")
    x = make(300, torch.Generator().manual_seed(1)).float()
    m32 = copy.deepcopy(model).float()
    op = pntk.operator(m32, x)
    K64 = op.to_dense().double()  # the float32 operator's own numbers, in float64
    ridge = 1e-3 * K64.diagonal().mean().item()
    M32 = pivoted_cholesky(op, 60, ridge, seed=3)
    M64 = pivoted_cholesky(K64, 60, ridge, seed=3)
    assert M32.U.dtype == torch.float32 and M64.U.dtype == F64
    assert M32.U.shape[1] >= 55  # the float32 cut-off keeps (nearly) every column read
    gram = M32.U.double().T @ M32.U.double()
    assert (gram - torch.eye(gram.shape[0], dtype=F64)).abs().max() < 1e-5
    # P⁻¹ stays symmetric positive definite: its smallest eigenvalue on the dense identity is positive.
    P = M32(torch.eye(300, dtype=F64))
    assert (P - P.T).abs().max() < 1e-6 and torch.linalg.eigvalsh((P + P.T) / 2).min() > 0
    Y = torch.randn(300, 3, generator=torch.Generator().manual_seed(2), dtype=F64)
    options = SolverOptions(tol=1e-6, maxiter=2000)
    r32 = pcg(K64, Y, ridge=ridge, preconditioner=M32, options=options)
    r64 = pcg(K64, Y, ridge=ridge, preconditioner=M64, options=options)
    assert r32.converged and r64.converged
    assert r32.iterations <= r64.iterations * 1.1 + 2
    assert (r32.solution - r64.solution).norm() <= 1e-5 * r64.solution.norm()


def test_a_float32_solve_is_not_called_converged_while_its_true_residual_is_above_tol():
    """Float32 products make the recurrence's residual drift below the true one: the solve restarts from the
    true residual, and where rounding stops it above tol it says so (and refinement with float64 reaches it)."""
    g = torch.Generator().manual_seed(0)
    Q, _ = torch.linalg.qr(torch.randn(300, 300, generator=g, dtype=F64))
    K = (Q * torch.logspace(0, 5, 300, dtype=F64)) @ Q.T
    Y = torch.randn(300, 2, generator=g, dtype=F64)
    options = SolverOptions(tol=1e-4, preconditioner="none", maxiter=5000)
    with pytest.warns(ConvergenceWarning, match="rounding of the kernel's float32 products"):
        alone = pcg(K.float(), Y, ridge=1.0, options=options)
    true = (Y - (K + torch.eye(300, dtype=F64)) @ alone.solution).norm(dim=0) / Y.norm(dim=0)
    assert alone.iterations < 5000 and alone.refinements >= 1
    assert not alone.converged and true.max() > 1e-4
    assert alone.history.min() <= 1e-4  # what the recurrence alone reported
    refined = pcg(K.float(), Y, ridge=1.0, options=options, exact=K)
    true = (Y - (K + torch.eye(300, dtype=F64)) @ refined.solution).norm(dim=0) / Y.norm(dim=0)
    assert refined.converged and true.max() <= 1e-4


def test_pivoted_cholesky_reads_an_uncached_operator_in_few_blocks(monkeypatch):
    """Every block of columns of an operator without cached factors is a pass over its samples: the factor then
    takes at most 16 blocks, with the same preconditioner up to the pivots drawn."""
    from pntk.solvers import pivoted_cholesky

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Tanh(), torch.nn.Linear(4, 2)).double()
    x = torch.randn(700, 3, dtype=F64)
    cached, uncached = pntk.operator(model, x), pntk.operator(model, x, memory=20_000)
    assert cached.plan.cache and not uncached.plan.cache
    blocks: list[int] = []
    columns = type(uncached).columns
    monkeypatch.setattr(
        type(uncached), "columns", lambda self, index: blocks.append(len(index)) or columns(self, index)
    )
    ridge = 1e-3 * cached.diagonal().mean().item()
    M = pivoted_cholesky(uncached, 640, ridge)
    assert blocks and max(blocks) == 40 and len(blocks) <= 16
    blocks.clear()
    pivoted_cholesky(cached, 640, ridge)
    assert max(blocks) == 32
    Y = torch.randn(700, 2, dtype=F64, generator=torch.Generator().manual_seed(1))
    run = pcg(cached, Y, ridge=ridge, preconditioner=M, options=SolverOptions(tol=1e-8))
    assert run.converged
