"""Extreme eigenpairs of a symmetric operator by block Lanczos with full reorthogonalisation and thick restarts.

# NOTE: [Block Lanczos as implemented]
# A cycle grows an orthonormal basis ``Q`` block by block, ``Q_{j+1} = orth(K Q_j)`` against all of ``Q``
# (classical Gram–Schmidt twice: "twice is enough"), keeping ``K Q`` so that the Rayleigh–Ritz matrix
# ``H = Qᵀ K Q`` is exact, not the recurrence's tridiagonal (which loses symmetry and orthogonality in
# floating point). Its eigenpairs ``(θ, y)`` give Ritz pairs ``(θ, Q y)`` with residuals
# ``‖K Q y − θ Q y‖``, computed from the stored ``K Q`` without another product. When the basis is full, a
# thick restart keeps the best Ritz vectors (and their products) and continues from the residual block of the
# wanted ones, so every product of a cycle serves the next. A column whose norm collapses during
# orthogonalisation means ``Q`` spans an invariant subspace: the cycle ends there.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor
from tqdm.auto import tqdm

from ..analysis.spectrum import Which
from ..choices import parse_enum
from .operand import as_operator, product
from .options import ConvergenceWarning, SolverOptions


@dataclass(frozen=True)
class Eigenpairs:
    """Extreme eigenpairs of a symmetric operator.

    Attributes:
        eigenvalues: ``[k]`` float64, most extreme first (descending for ``"LA"``, ascending for ``"SA"``).
        eigenvectors: ``[n, k]`` float64, orthonormal, column ``i`` for ``eigenvalues[i]``.
        residuals: ``[k]`` ``‖K y − θ y‖`` of each pair.
        iterations: restart cycles run.
        products: columns multiplied by the operator in all.
        converged: every residual is at most ``tol · max|θ|``.
    """

    eigenvalues: Tensor
    eigenvectors: Tensor
    residuals: Tensor
    iterations: int
    products: int
    converged: bool


def eigsh(
    K: Any, k: int = 6, which: Which | str = "LA", *, options: SolverOptions | None = None, exact: Any | None = None
) -> Eigenpairs:
    r"""The ``k`` largest (``"LA"``) or smallest (``"SA"``) eigenpairs of a symmetric kernel, matrix-free.

    Block Lanczos with full reorthogonalisation and thick restarts (see the note [Block Lanczos as
    implemented]); stops when every wanted pair has ``‖K y − θ y‖ ≤ tol · max|θ|``, and warns with a
    :class:`ConvergenceWarning` when ``options.maxiter`` cycles do not get there.

    Cost: each cycle multiplies ``krylov_dim − kept`` columns, in blocks of ``block_size`` columns (one product
    each), and ``O(n · krylov_dim²)`` flops of orthogonalisation. Memory: ``2 · n · krylov_dim`` float64.
    The largest eigenvalues of a kernel converge in a few cycles; the smallest sit in a cluster near zero and
    may need many.

    With ``exact`` (the same kernel with products in a higher precision, e.g. ``pntk.operator(..., dtype=
    torch.float64)`` beside a float32 ``K``), a last Rayleigh–Ritz step on the converged vectors uses one
    product of ``k`` columns with ``exact``: the eigenvalues are then those of ``exact``'s matrix to about
    ``‖(K − K_exact) y‖² / gap`` instead of ``‖K − K_exact‖`` (the rounding of float32 products), and the
    residuals reported are ``exact``'s.

    Args:
        K: ``[n, n]`` symmetric: a tensor or array (an eNTK ``[N, N, O, O]`` as its matrix), a
            :class:`pntk.KernelOperator`, any :class:`pntk.operators.LinearOperator`, or a :class:`pntk.KernelStore`.
        k: how many pairs, ``1 ≤ k < n``.
        which: ``"LA"`` (largest) or ``"SA"`` (smallest).
        options: ``tol``, ``maxiter`` (cycles), ``block_size``, ``krylov_dim``, ``seed``, ``progress``.
        exact: ``[n, n]``, the same kernel in a higher precision, for the last Rayleigh–Ritz step.

    Returns:
        :class:`Eigenpairs`.

    Raises:
        ValueError: a non-square operator, ``k`` out of range, or ``exact`` of another shape.

    Example:
        >>> import torch
        >>> K = torch.diag(torch.arange(1.0, 11.0, dtype=torch.float64))
        >>> pairs = eigsh(K, 3)
        >>> [round(v, 8) for v in pairs.eigenvalues.tolist()], pairs.converged
        ([10.0, 9.0, 8.0], True)
    """
    options = options or SolverOptions()
    which = parse_enum(Which, which, "which value")
    op = as_operator(K)
    n = op.shape[0]
    if op.shape[1] != n:
        raise ValueError(f"the kernel must be square; got shape {op.shape}")
    if not 1 <= k < n:
        raise ValueError(f"k must satisfy 1 ≤ k < n = {n}; got k = {k}")
    sign = 1.0 if which is Which.LA else -1.0
    b = min(options.block_size or min(k, 16), n)
    m = min(n, options.krylov_dim or max(3 * k, k + 4 * b, 40))
    if m < k + b:
        raise ValueError(f"krylov_dim = {m} must be at least k + block_size = {k + b}")
    maxiter = options.maxiter or 100
    device = op.device
    g = torch.Generator(device="cpu").manual_seed(options.seed)
    start = torch.randn(n, b, generator=g, dtype=torch.float64).to(device)

    def apply(X: Tensor) -> Tensor:
        return sign * product(op, X)

    Q = _orthonormal(start, None)
    KQ = torch.empty(n, 0, dtype=torch.float64, device=device)
    products, cycle, exhausted = 0, 0, False
    bar = tqdm(total=maxiter, desc="Lanczos cycles", unit="cycle", disable=not _show(options.progress), leave=False)
    while True:
        cycle += 1
        # Grow the basis: the newest block gets its product, which spawns the next block.
        while Q.shape[1] > KQ.shape[1]:
            pending = Q[:, KQ.shape[1] :]
            KQ = torch.cat([KQ, apply(pending)], 1)
            products += pending.shape[1]
            if Q.shape[1] >= m:
                break
            nxt = _orthonormal(KQ[:, -pending.shape[1] :][:, : m - Q.shape[1]], Q)
            if nxt.shape[1] == 0:  # Q spans an invariant subspace: its Ritz pairs are exact
                exhausted = True
                break
            Q = torch.cat([Q, nxt], 1)
        H = Q.T @ KQ
        theta, Y = torch.linalg.eigh((H + H.T) / 2)
        theta, Y = theta.flip(0), Y.flip(1)  # best (largest of sign·K) first
        X, KX = Q @ Y, KQ @ Y
        R = KX - X * theta
        residuals = R.norm(dim=0)
        scale = theta.abs().max().clamp(min=torch.finfo(torch.float64).tiny)
        bar.update(1)
        if bool((residuals[:k] <= options.tol * scale).all()) or exhausted or cycle >= maxiter:
            break
        # Thick restart: keep the best Ritz vectors, continue from the residuals of the wanted ones.
        keep = min(m - b, max(k + b, m // 2))
        Q, KQ = X[:, :keep], KX[:, :keep]
        nxt = _orthonormal(R[:, :b], Q)
        if nxt.shape[1] == 0:
            break
        Q = torch.cat([Q, nxt], 1)
    bar.close()
    if exact is not None:
        theta, X, residuals = _rayleigh_ritz(as_operator(exact, "exact"), X[:, :k], sign)
        products += k
        scale = theta.abs().max().clamp(min=torch.finfo(torch.float64).tiny)
    converged = bool((residuals[:k] <= options.tol * scale).all())
    if not converged:
        warnings.warn(
            f"block Lanczos did not reach tol = {options.tol:g} in {cycle} cycles ({products} products): the largest "
            f"relative residual of the {k} wanted pairs is {(residuals[:k].max() / scale).item():.3g}; raise "
            "maxiter or krylov_dim",
            ConvergenceWarning,
            stacklevel=2,
        )
    return Eigenpairs(sign * theta[:k], X[:, :k], residuals[:k], cycle, products, converged)


def _rayleigh_ritz(op: Any, Z: Tensor, sign: float) -> tuple[Tensor, Tensor, Tensor]:
    """Ritz pairs of ``sign · op`` on ``span Z`` (orthonormal ``Z`` ``[n, k]``), best first, with residuals.

    Raises:
        ValueError: ``op`` is not ``[n, n]``.
    """
    n = Z.shape[0]
    if op.shape != (n, n):
        raise ValueError(f"exact must have the kernel's shape {(n, n)}; got {op.shape}")
    KZ = sign * product(op, Z)
    H = Z.T @ KZ
    theta, Y = torch.linalg.eigh((H + H.T) / 2)
    theta, Y = theta.flip(0), Y.flip(1)
    X = Z @ Y
    return theta, X, (KZ @ Y - X * theta).norm(dim=0)


def _orthonormal(Z: Tensor, Q: Tensor | None) -> Tensor:
    """An orthonormal basis of the part of ``span Z`` orthogonal to ``Q``; columns that vanish are dropped."""
    norms = Z.norm(dim=0).clamp(min=torch.finfo(Z.dtype).tiny)
    Z = Z / norms
    for _ in range(2):  # classical Gram–Schmidt twice
        if Q is not None and Q.shape[1]:
            Z = Z - Q @ (Q.T @ Z)
    q, r = torch.linalg.qr(Z)
    keep = r.diagonal().abs() > 1e-10
    q = q[:, keep]
    if Q is not None and Q.shape[1] and q.shape[1]:
        q = q - Q @ (Q.T @ q)
        q, _ = torch.linalg.qr(q)
    return q


def _show(progress: bool | None) -> bool:
    import sys

    return progress if progress is not None else sys.stderr.isatty()
