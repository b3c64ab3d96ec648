"""Spectra of kernels: the whole spectrum of a dense kernel, or its ends by Lanczos."""

from __future__ import annotations

import enum
from typing import Any

import numpy as np
import torch
from scipy.linalg import eigvalsh
from scipy.sparse.linalg import eigsh

from pntk.analysis import _operators
from pntk.analysis._linalg import (
    ArrayLike,
    as_linear_operator,
    as_matrix_torch,
    device_float,
    on_accelerator,
    symmetric_matrix,
)
from pntk.analysis._operators import is_matrix_free
from pntk.choices import parse_enum

__all__ = ["Which", "eigenvalues", "extreme_eigenvalues"]


class Which(str, enum.Enum):
    """Which end of the spectrum :func:`extreme_eigenvalues` computes.

    Attributes:
        LA: the largest (algebraic) eigenvalues. Lanczos converges fast on these.
        SA: the smallest (algebraic) eigenvalues. For a kernel they sit in a dense cluster near zero, so
            convergence can take many more products; ``λ_min`` is only resolved to about
            ``tol · λ_max``.
    """

    LA = "LA"
    SA = "SA"


def eigenvalues(K: ArrayLike) -> np.ndarray:
    r"""All eigenvalues of a symmetric kernel, in descending order, by a dense float64 ``eigvalsh``.

    An eNTK ``[N, N, O, O]`` is taken as its ``[N·O, N·O]`` matrix. The spectrum of ``K ⊗ I_O`` is that of
    ``K`` with each eigenvalue repeated ``O`` times, so ``eigenvalues(Theta)`` and ``eigenvalues(K)`` can be
    compared end to end.

    Cost: ``O(n³)`` time and one ``n × n`` float64 copy (``n = N`` or ``N·O``); use
    :func:`extreme_eigenvalues` beyond a few tens of thousands. A kernel on a GPU is decomposed there
    (``torch.linalg.eigvalsh``, in float64 when it fits; NOTE [Kernels on an accelerator]).

    Args:
        K: ``[N, N]`` kernel or ``[N, N, O, O]`` eNTK (NumPy or torch). Only one triangle is read.

    Returns:
        ``[n]`` float64 eigenvalues, ``λ_1 ≥ λ_2 ≥ … ≥ λ_n``.

    Raises:
        ValueError: if ``K`` is not square.

    Example:
        >>> import numpy as np
        >>> eigenvalues(np.array([[2.0, 1.0], [1.0, 2.0]]))
        array([3., 1.])
    """
    if isinstance(K, torch.Tensor) and on_accelerator(K):
        A = as_matrix_torch(K.detach())
        if A.ndim != 2 or A.shape[0] != A.shape[1]:
            raise ValueError(f"K must be a square kernel [N, N] or an eNTK [N, N, O, O]; got shape {tuple(K.shape)}")
        w = torch.linalg.eigvalsh(A.to(device_float(A)))
        return w.flip(0).to("cpu", torch.float64).numpy()
    return eigvalsh(symmetric_matrix(K, "K"), check_finite=True)[::-1].copy()


def extreme_eigenvalues(
    op: Any,
    k: int = 1,
    which: Which | str = "LA",
    *,
    tol: float = 0.0,
    maxiter: int | None = None,
    seed: int | None = 0,
) -> np.ndarray:
    r"""The ``k`` largest or smallest eigenvalues of a symmetric kernel by Lanczos (ARPACK ``eigsh``).

    Needs only products ``K @ v``, so it works on kernels too large to hold and on matrix-free operators.
    The start vector is drawn from ``seed`` so that results are reproducible.

    Args:
        op: the ``[n, n]`` kernel: a NumPy array or torch tensor (an eNTK ``[N, N, O, O]`` is taken as its
            ``[N·O, N·O]`` matrix), a SciPy ``LinearOperator`` or sparse matrix, an object with ``shape``
            and ``matvec``, one with ``shape`` and ``@`` that accepts NumPy arrays, or one with
            ``to_scipy()``. A pntk operator (:func:`pntk.operator`) or a :class:`pntk.KernelStore` (streamed,
            never loaded whole) goes to block Lanczos (:func:`pntk.solvers.eigsh`), whose ``maxiter`` counts
            restarts and which warns with :class:`pntk.solvers.ConvergenceWarning` instead of raising.
        k: how many eigenvalues, ``1 ≤ k < n`` (use :func:`eigenvalues` for the whole spectrum).
        which: ``"LA"`` (largest) or ``"SA"`` (smallest).
        tol: relative accuracy of the eigenvalues; ``0`` for machine precision.
        maxiter: limit on Arnoldi restarts; ``None`` for ARPACK's default ``10 n``.
        seed: seed of the random start vector; ``None`` for a fresh one.

    Returns:
        ``[k]`` float64 eigenvalues, most extreme first: descending for ``"LA"``, ascending for ``"SA"``.

    Raises:
        ValueError: for a non-square operator, ``k`` out of range or an unknown ``which``.
        scipy.sparse.linalg.ArpackNoConvergence: if Lanczos does not converge within ``maxiter``.

    Example:
        >>> import numpy as np
        >>> K = np.diag([4.0, 3.0, 2.0, 1.0])
        >>> extreme_eigenvalues(K, 2, "LA"), extreme_eigenvalues(K, 1, "SA")
        (array([4., 3.]), array([1.]))
    """
    which = parse_enum(Which, which, "which value")
    if is_matrix_free(op):
        return _operators.extreme_eigenvalues(op, k, which.value, tol=tol, maxiter=maxiter, seed=seed)
    A = as_linear_operator(op)
    n, m = A.shape
    if n != m:
        raise ValueError(f"the kernel must be square; got shape {A.shape}")
    if not 1 <= k < n:
        raise ValueError(f"k must satisfy 1 ≤ k < n = {n}; got k = {k} (use eigenvalues() for the whole spectrum)")
    v0 = np.random.default_rng(seed).standard_normal(n)
    w = eigsh(A, k=k, which=which.value, tol=tol, maxiter=maxiter, v0=v0, return_eigenvectors=False)
    w = np.sort(w.astype(np.float64))
    return w[::-1].copy() if which is Which.LA else w
