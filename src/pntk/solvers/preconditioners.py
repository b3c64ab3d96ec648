"""Low-rank preconditioners for ``(K + λI) W = Y``: randomised Nyström and randomised pivoted Cholesky.

Both approximate ``K ≈ U diag(Λ̂) Uᵀ`` (``U`` ``[n, r]`` orthonormal) and apply

.. math::

    P^{-1} = (\\hat λ_r + λ)\\, U (\\hat Λ + λI)^{-1} U^⊤ + (I − U U^⊤),

the inverse of ``U Λ̂ Uᵀ + λI`` with the unresolved part of the spectrum taken at ``λ̂_r``, the smallest kept
eigenvalue (Frangella, Tropp & Udell 2023). Conjugate gradients then converge at the rate of
``(λ̂_r + λ) / λ`` instead of ``(λ_1 + λ) / λ``.

For an eNTK ``Θ`` ``[N·O, N·O]`` (row ``n·O + a``), :func:`kronecker` applies a scalar kernel's
preconditioner to every output: ``Θ ≈ K ⊗ I_O``, so ``P⁻¹ ⊗ I_O`` preconditions ``Θ + λI`` from ``N × r``
numbers and columns of an ``N × N`` kernel. See the note [Which K for Θ ≈ K ⊗ I].

# NOTE: [Which K for Θ ≈ K ⊗ I]
# The K that minimises ‖Θ − K ⊗ I_O‖_F is the mean of Θ's diagonal blocks, (1/O) Σ_a Θ_aa: the trace NTK.
# The pNTK, (1/O) Σ_ab Θ_ab, adds the off-diagonal blocks, which vanish only as the readout widens. Measured on
# MNIST-1D's MLP 40-512-512-10 at initialisation (float64, λ = 10⁻³ · mean diagonal, relative residual 10⁻⁴):
# with the trace NTK's rank-300 pivoted Cholesky ⊗ I_O, 72 PCG iterations at N = 2,000 against 116 with the
# pNTK's (and 205 with the eNTK's own rank-300 factor); at N = 5,000 and rank 500, 157 against 347. Its columns
# cost O vector products where the pNTK's cost one, which the saved iterations repay many times. After training
# (10 epochs, 85% train accuracy; N = 2,000, rank 300) Θ is farther from K ⊗ I: 682 iterations with the trace
# NTK's factor, 708 with the pNTK's, 500 with the eNTK's own factor of the same rank (O times the memory), 1,418
# with the eNTK's own factor of the same memory (rank 30).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from ..choices import parse_enum
from .operand import as_operator, product
from .options import Preconditioner
from .rpcholesky import rpcholesky


@dataclass(frozen=True)
class LowRankPreconditioner:
    """``P⁻¹`` for ``K + λI`` from ``K ≈ U diag(Λ̂) Uᵀ`` (see the module docstring).

    Attributes:
        U: ``[n, r]`` orthonormal columns, float64 (float32 from :func:`pivoted_cholesky` of a float32 kernel).
        eigenvalues: ``[r]`` ``Λ̂ ≥ 0``, descending, float64.
        ridge: ``λ > 0``.
        products: columns of ``K`` multiplied or read to build it.
    """

    U: Tensor
    eigenvalues: Tensor
    ridge: float
    products: int

    def __call__(self, R: Tensor) -> Tensor:
        """``P⁻¹ R`` for ``R [n, k]`` (the low-rank correction in ``U``'s precision, added to ``R`` in its own)."""
        floor = self.eigenvalues[-1] + self.ridge
        coefficients = (floor / (self.eigenvalues + self.ridge)).unsqueeze(1) - 1
        UR = (self.U.T @ R.to(self.U.dtype)).to(coefficients.dtype)
        return R + (self.U @ (UR * coefficients).to(self.U.dtype)).to(R.dtype)


def nystrom(op: Any, rank: int, ridge: float, *, seed: int = 0) -> LowRankPreconditioner:
    """Randomised Nyström preconditioner: one product with ``rank`` Gaussian columns.

    Args:
        op: the symmetric positive semi-definite ``[n, n]`` kernel: tensor, array, operator or store.
        rank: ``r``, at most ``n``.
        ridge: ``λ > 0``.
        seed: the seed of the Gaussian test matrix.

    Returns:
        The preconditioner. Cost: one product with ``r`` columns, a QR, a Cholesky and an SVD of ``[n, r]``.
    """
    op = as_operator(op, "op")
    n = op.shape[0]
    r = min(rank, n)
    g = torch.Generator(device="cpu").manual_seed(seed)
    Omega, _ = torch.linalg.qr(torch.randn(n, r, generator=g, dtype=torch.float64).to(op.device))
    Y = product(op, Omega)
    # A shift at the rounding level of the products makes Ωᵀ Y numerically positive definite.
    nu = n**0.5 * torch.finfo(op.dtype).eps * Y.norm()
    Y = Y + nu * Omega
    C = Omega.T @ Y
    L = torch.linalg.cholesky((C + C.T) / 2)
    B = torch.linalg.solve_triangular(L, Y.T, upper=False).T  # Y L⁻ᵀ
    U, S, _ = torch.linalg.svd(B, full_matrices=False)
    return LowRankPreconditioner(U, (S.square() - nu).clamp(min=0), ridge, r)


def pivoted_cholesky(
    op: Any, rank: int, ridge: float, *, block: int | None = None, seed: int = 0
) -> LowRankPreconditioner:
    """Randomised pivoted Cholesky preconditioner: ``K ≈ F Fᵀ`` from ``rank`` columns of ``K``.

    Pivots are drawn ``block`` at a time with probability proportional to the diagonal of the residual
    ``K − F Fᵀ`` (block RPCholesky, Chen, Epperly, Tropp & Webber 2024); each block of columns comes from
    ``op.columns``, which a kernel operator contracts from its factors far more cheaply than products (a
    dense layer costs ``N·s·(n + m)`` instead of ``N·s·n·m``). Needs the operator's exact diagonal.

    Args:
        op: the symmetric positive semi-definite ``[n, n]`` kernel (tensor, array, operator or store) with its
            exact diagonal.
        rank: the most columns read, at most ``n``.
        ridge: ``λ > 0``.
        block: pivots per block of columns; default 32, or, for a kernel operator whose factors are not
            cached (each block of columns is then a pass over its samples), ``rank/16``, so that the factor
            takes at most 16 passes.
        seed: the seed of the pivot draws.

    Returns:
        The preconditioner. Cost: ``rank`` columns in blocks of ``block``, ``O(n · rank²)`` flops; memory
        ``n × rank`` numbers in the kernel's precision, at least float32 (400 MB at ``n = 10⁵``, rank 1000, for
        a float32 kernel). See the note [A preconditioner in float32].
    """
    # F (n × rank) is the preconditioner's whole memory: its eigenbasis is written over it.
    F = rpcholesky(op, rank, block=block or _block(op, rank), seed=seed).F
    return _eigenbasis(F, ridge, F.shape[1])


def _block(op: Any, rank: int) -> int:
    """Pivots per block: 32, or ``rank/16`` for a kernel operator that prepares its factors for every block of
    columns (at N = 10⁵ the trace NTK's pass takes seconds, and rank 2,000 in blocks of 32 would be 63 passes)."""
    from ..operators.kernel import KernelOperator

    if isinstance(op, KernelOperator) and not op.plan.cache:
        return max(32, -(-rank // 16))
    return 32


# NOTE: [A preconditioner in float32]
# For a float32 kernel the factor F of pivoted Cholesky is kept in float32, halving the preconditioner's memory
# (at n = 10⁵ a float64 rank-1000 factor alone held 0.8 GB of a 2 GB budget): the columns it is built from are
# float32 products already. What needs float64 is kept in float64: the Gram FᵀF (accumulated block by block),
# its eigendecomposition and the eigenvalues, so that the small kept eigenvalues, which set the preconditioned
# condition number, are resolved. The eigenbasis U = F V Λ^{-1/2}, rounded to float32, is orthonormal to about
# 10⁻⁶, far below the smallest factor (λ̂_r + λ)/(λ̂_1 + λ) of P⁻¹ on any kernel we solve (10⁻⁵ for an MLP's
# pNTK at n = 10⁵), so P⁻¹ stays positive definite.


def _eigenbasis(F: Tensor, ridge: float, products: int) -> LowRankPreconditioner:
    """``F Fᵀ = U diag(Λ) Uᵀ`` with ``U`` written over ``F`` row block by row block (no second ``n × r``); the
    Gram and the eigenvalues in float64 whatever ``F``'s dtype."""
    step = max(1, 2**24 // max(1, F.shape[1]))
    C = torch.zeros(F.shape[1], F.shape[1], dtype=torch.float64, device=F.device)
    for s in range(0, F.shape[0], step):
        Fs = F[s : s + step].to(torch.float64)
        C += Fs.T @ Fs
    lam, V = torch.linalg.eigh((C + C.T) / 2)
    lam, V = lam.flip(0).clamp(min=0), V.flip(1)
    # Below ~ε·λ̂_1 an eigenvalue of F Fᵀ is F's rounding (the rank-scaled rule of a numerical rank would cut
    # a float32 factor at 2·10⁻⁴ λ̂_1, far above the eigenvalues the preconditioner is for).
    positive = lam > lam[0] * torch.finfo(F.dtype).eps * 10
    M = V[:, positive] / lam[positive].sqrt()  # U = F V Λ^{-1/2}
    for s in range(0, F.shape[0], step):
        F[s : s + step, : M.shape[1]] = (F[s : s + step].to(torch.float64) @ M).to(F.dtype)
    return LowRankPreconditioner(F[:, : M.shape[1]], lam[positive], ridge, products)


@dataclass(frozen=True)
class KroneckerPreconditioner:
    """``P⁻¹ ⊗ I_O`` for an eNTK ``Θ + λI`` with ``Θ ≈ K ⊗ I_O``, from a preconditioner ``P⁻¹`` of ``K + λI``.

    Symmetric positive definite whenever ``P⁻¹`` is; a positive multiple of ``(Θ + λI)⁻¹`` (so that conjugate
    gradients finish in one iteration) when ``Θ = K ⊗ I_O`` and ``P⁻¹`` is of full rank.

    Attributes:
        base: the preconditioner of the scalar kernel ``K`` ``[N, N]``.
        num_outputs: ``O``.
    """

    base: LowRankPreconditioner
    num_outputs: int

    @property
    def products(self) -> int:
        """Columns of ``K`` multiplied or read to build it."""
        return self.base.products

    def __call__(self, R: Tensor) -> Tensor:
        """``(P⁻¹ ⊗ I_O) R`` for ``R [N·O, k]``, row ``n·O + a``."""
        n, k = R.shape
        return self.base(R.reshape(n // self.num_outputs, self.num_outputs * k)).reshape(n, k)


def kronecker(
    K: Any,
    num_outputs: int,
    ridge: float,
    *,
    rank: int,
    preconditioner: Preconditioner | str = Preconditioner.PIVOTED_CHOLESKY,
    seed: int = 0,
) -> KroneckerPreconditioner:
    """A preconditioner of the eNTK system ``Θ + λI`` from a scalar kernel ``K``, ``⊗ I_O``.

    Args:
        K: ``[N, N]`` the trace NTK of the same model and inputs (best: the note [Which K for Θ ≈ K ⊗ I]), or
            its pNTK (a tensor, array, operator or store).
        num_outputs: ``O``; the eNTK is ``[N·O, N·O]``, row ``n·O + a``.
        ridge: the eNTK system's ``λ > 0``.
        rank: the rank of ``K``'s preconditioner.
        preconditioner: ``"pivoted_cholesky"`` (default; needs ``K``'s diagonal) or ``"nystrom"``.
        seed: the seed of its random draws.

    Returns:
        The preconditioner. Cost: that of ``K``'s preconditioner; memory ``N × rank`` numbers (float32 for a
        float32 ``K``).

    Raises:
        ValueError: ``K`` is not square, ``num_outputs < 1`` or an unknown preconditioner.

    Example:
        >>> import torch
        >>> K = torch.tensor([[2.0, 1.0], [1.0, 2.0]], dtype=torch.float64)
        >>> Theta = torch.kron(K, torch.eye(3, dtype=torch.float64))
        >>> M = kronecker(K, 3, 0.5, rank=2)
        >>> from pntk.solvers import pcg
        >>> pcg(Theta, torch.ones(6, dtype=torch.float64), ridge=0.5, preconditioner=M).iterations
        1
    """
    op = as_operator(K, "K")
    if op.shape[0] != op.shape[1]:
        raise ValueError(f"K must be square; got shape {op.shape}")
    if num_outputs < 1:
        raise ValueError(f"num_outputs must be at least 1; got {num_outputs}")
    kind = parse_enum(Preconditioner, preconditioner, "preconditioner")
    if kind not in (Preconditioner.NYSTROM, Preconditioner.PIVOTED_CHOLESKY):
        raise ValueError(f"the Kronecker preconditioner wraps 'nystrom' or 'pivoted_cholesky', not {kind.value!r}")
    build = nystrom if kind is Preconditioner.NYSTROM else pivoted_cholesky
    return KroneckerPreconditioner(build(op, rank, ridge, seed=seed), num_outputs)
