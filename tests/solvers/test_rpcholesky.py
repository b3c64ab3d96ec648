"""Block randomly pivoted Cholesky: the factor is the Nyström approximation of its pivots, below the kernel."""

from __future__ import annotations

import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from pntk.solvers.rpcholesky import rpcholesky

F64 = torch.float64


@settings(max_examples=40, deadline=None)
@given(
    n=st.integers(2, 24),
    true_rank=st.integers(1, 24),
    rank=st.integers(1, 24),
    block=st.integers(1, 8),
    seed=st.integers(0, 2**31),
)
def test_the_factor_is_the_nystrom_approximation_of_its_pivots(n, true_rank, rank, block, seed):
    g = torch.Generator().manual_seed(seed)
    # Diagonals across 4 decades, and kernels of low rank.
    scales = 10 ** (2 * torch.rand(min(true_rank, n), generator=g, dtype=F64))
    A = torch.randn(n, min(true_rank, n), generator=g, dtype=F64) * scales
    K = A @ A.T
    result = rpcholesky(K, rank, block=block, seed=seed)
    F, S = result.F, result.pivots
    assert min(rank, n, true_rank) <= F.shape[1] <= min(rank, n) and len(S) >= F.shape[1]
    assert len(set(S.tolist())) == len(S)  # no column is read twice
    scale = K.diagonal().max().item()
    K_SS = K[S][:, S]
    nystrom = K[:, S] @ torch.linalg.pinv(K_SS, hermitian=True, rtol=1e-12) @ K[S]
    # The reference itself is only as accurate as ε·cond(K_SS) (up to 10⁹ for diagonals across 4 decades).
    cond = torch.linalg.cond(K_SS).clamp(max=1e12).item()
    torch.testing.assert_close(F @ F.T, nystrom, rtol=0, atol=max(1e-8, 10 * torch.finfo(F64).eps * cond) * scale)
    residual = K - F @ F.T
    assert torch.linalg.eigvalsh(residual).min() > -1e-7 * scale  # F Fᵀ ⪯ K
    torch.testing.assert_close(result.residual, residual.diagonal().clamp(min=0), rtol=0, atol=1e-7 * scale)
    if F.shape[1] >= min(n, true_rank):  # every direction found: the factor is the kernel
        torch.testing.assert_close(F @ F.T, K, rtol=0, atol=1e-7 * scale)
