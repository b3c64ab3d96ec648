"""Shared linear algebra for the kernel analyses.

Conversions of kernels to NumPy float64, the two layouts of the eNTK, the kernel-regression system
(train kernel, targets, residuals, test kernel), symmetric solves with a checked Cholesky factorisation and
an eigendecomposition fallback, and linear operators for matrix-free methods.
"""

# NOTE: [In-place factorisation]
# A float64 train kernel of N = 20,000 takes 3.2 GB. The solvers therefore work on one private
# Fortran-ordered copy (or, with ``overwrite_kernel=True``, on the caller's array itself) and hand it to
# LAPACK in place. A C-ordered symmetric matrix is passed as its transpose, which is the same matrix already
# in Fortran order, so no transposing copy is made. The Cholesky factorisation overwrites only the lower
# triangle and the diagonal; the strict upper triangle still holds the matrix afterwards, so a failed or
# ill-conditioned factorisation is recovered by restoring the saved diagonal and reading the upper
# triangle, without a second copy.

# NOTE: [Blocked Cholesky]
# OpenBLAS's threaded potrf dies with SIGSEGV in its threaded syrk on large matrices (so does numpy's
# ``P @ P.T`` with P [20,000, 256], which calls the same syrk): seen with the OpenBLAS 0.3.30 bundled with
# SciPy and NumPy from n ≈ 16,000 on two threads, and reported upstream for other versions and sizes. The
# Cholesky factorisation is therefore blocked here: LAPACK potrf only on diagonal blocks of at most
# ``_BLOCK`` rows, GEMM (threaded and unaffected) for the updates and a triangular solve for each panel.
# Same n³/3 flops; temporaries of n × _BLOCK.

from __future__ import annotations

import enum
import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from scipy.linalg import eigh, lapack, solve_triangular
from scipy.sparse.linalg import LinearOperator, aslinearoperator

from pntk.analysis._operators import refuse_whole_load

ArrayLike = np.ndarray | torch.Tensor
"""A kernel or target array: a NumPy array or a torch tensor (any dtype, any device)."""

_EPS = np.finfo(np.float64).eps
_BLOCK = 2048


class IllConditionedKernelWarning(UserWarning):
    """A train kernel was singular, not positive definite, or too ill-conditioned for a Cholesky solve.

    The result was computed by the documented fallback (the eigendecomposition pseudo-inverse, or the last
    conjugate-gradient iterate). Add a ridge or pass ``on_singular="raise"`` to avoid it.
    """


class IllConditionedKernelError(np.linalg.LinAlgError):
    """Raised instead of :class:`IllConditionedKernelWarning` when ``on_singular="raise"``."""


class OnSingular(str, enum.Enum):
    """What a solver does with a singular or ill-conditioned train kernel.

    Attributes:
        WARN: emit an :class:`IllConditionedKernelWarning` and return the fallback result.
        RAISE: raise :class:`IllConditionedKernelError`.
        IGNORE: return the fallback result without a warning (for sweeps that expect singular kernels).
    """

    WARN = "warn"
    RAISE = "raise"
    IGNORE = "ignore"


def default_rtol(n: int) -> float:
    """Relative eigenvalue cutoff of an ``n × n`` symmetric matrix: ``n · ε`` (float64 rounding level)."""
    return n * _EPS


def _to_float64(x: Any) -> tuple[np.ndarray, bool]:
    """``x`` as a float64 NumPy array, and whether that array is fresh memory (not shared with ``x``)."""
    refuse_whole_load(x)
    if isinstance(x, torch.Tensor):
        t = x.detach()
        fresh = t.device.type != "cpu" or t.dtype != torch.float64
        return t.to("cpu", torch.float64).resolve_conj().resolve_neg().numpy(), fresh
    a = np.asarray(x)
    return a.astype(np.float64, copy=False), a.dtype != np.float64


def as_float64(x: Any) -> np.ndarray:
    """``x`` (a NumPy array, torch tensor or nested sequence) as a float64 NumPy array; no copy if it is one."""
    return _to_float64(x)[0]


def entk_as_matrix(Theta: np.ndarray) -> np.ndarray:
    """The eNTK ``[N1, N2, O, O]`` as the matrix ``[N1·O, N2·O]`` with row ``n·O + a`` (a copy if O > 1)."""
    N1, N2, O, _ = Theta.shape
    return Theta.transpose(0, 2, 1, 3).reshape(N1 * O, N2 * O)


def entk_as_blocks(Theta: np.ndarray, N1: int, N2: int, O: int) -> np.ndarray:
    """The eNTK matrix ``[N1·O, N2·O]`` as the blocks ``[N1, N2, O, O]`` (a view)."""
    return Theta.reshape(N1, O, N2, O).transpose(0, 2, 1, 3)


def symmetric_matrix(K: ArrayLike, name: str = "kernel") -> np.ndarray:
    """A square kernel as a float64 matrix: ``[N, N]`` as is, an eNTK ``[N, N, O, O]`` as ``[N·O, N·O]``."""
    A = as_float64(K)
    if A.ndim == 4 and A.shape[0] == A.shape[1] and A.shape[2] == A.shape[3]:
        return entk_as_matrix(A)
    if A.ndim == 2 and A.shape[0] == A.shape[1]:
        return A
    raise ValueError(f"{name} must be a square kernel [N, N] or an eNTK [N, N, O, O]; got shape {A.shape}")


def condition_number(lambda_max: float, lambda_min: float, n: int) -> float:
    """``κ = λ_max / λ_min``, or ``inf`` when ``λ_min ≤ n·ε·λ_max`` (numerically singular, or indefinite)."""
    if lambda_max <= 0 or lambda_min <= default_rtol(n) * lambda_max:
        return float("inf")
    return float(lambda_max / lambda_min)


def _check_finite(A: np.ndarray, name: str) -> None:
    # LAPACK's max-abs norm propagates NaN and inf, so this is one pass over A without a temporary.
    if not np.isfinite(lapack.dlange("M", A)):
        raise ValueError(f"{name} contains NaN or inf entries")


def _fortran(A: np.ndarray) -> np.ndarray:
    """A symmetric matrix in Fortran order: the transpose (a view) of a C-ordered one, else a copy."""
    if A.flags.f_contiguous:
        return A
    if A.flags.c_contiguous:
        return A.T
    return np.asfortranarray(A)


@dataclass(frozen=True)
class KernelSystem:
    """The layout of a kernel-regression problem, scalar or matrix-valued, and its right-hand sides.

    With a scalar kernel ``K [N, N]`` the system matrix is ``K`` with ``O`` right-hand sides
    ``R = Y − f0(X)`` ``[N, O]``. With the eNTK ``Θ [N, N, O, O]`` it is ``Θ [N·O, N·O]`` with one
    right-hand side, ``R`` flattened with row ``n·O + a``. The matrix itself is returned next to the system
    by :func:`kernel_system`, so that a solver can free it as soon as it is done with it.

    Attributes:
        R: ``[rows, cols]`` residual ``Y − f0(X)``; ``rows = N`` and ``cols = O`` (scalar) or
            ``rows = N·O`` and ``cols = 1`` (matrix-valued).
        N: number of train inputs.
        O: number of outputs.
        matrix_valued: whether the kernel is the eNTK.
        squeeze: whether ``Y_train`` was one-dimensional (results drop their output axis).
    """

    R: np.ndarray
    N: int
    O: int
    matrix_valued: bool
    squeeze: bool

    def test_matrix(self, K_test_train: ArrayLike) -> np.ndarray:
        """``K_test_train`` as ``[M, N]`` (scalar) or ``[M·O, N·O]`` (matrix-valued), float64.

        Accepts ``[M, N]`` for a scalar system; ``[M, N, O, O]`` or ``[M·O, N·O]`` for a matrix-valued one.
        """
        B = as_float64(K_test_train)
        N, O = self.N, self.O
        if self.matrix_valued and B.ndim == 4 and B.shape[1:] == (N, O, O):
            return entk_as_matrix(B)
        if self.matrix_valued and B.ndim == 2 and B.shape[1] == N * O and B.shape[0] % O == 0:
            return B
        if not self.matrix_valued and B.ndim == 2 and B.shape[1] == N:
            return B
        expected = f"[M, N, O, O] with N, O = {N}, {O} or [M·O, N·O]" if self.matrix_valued else f"[M, {N}]"
        raise ValueError(f"K_test_train has shape {B.shape}; it must be {expected}, like K_train_train")

    def outputs(self, F: np.ndarray, f0: ArrayLike | None, name: str) -> np.ndarray:
        """Solver outputs ``[rows', T, cols]`` as predictions ``[T, n, O]`` plus ``f0``.

        ``[T, n]`` without the output axis when ``Y_train`` was one-dimensional.
        """
        T = F.shape[1]
        n = F.shape[0] // (self.O if self.matrix_valued else 1)
        out = F.transpose(1, 0, 2).reshape(T, n, self.O)
        if f0 is not None:
            out += outputs_like(f0, (n, self.O), name)
        return out[..., 0] if self.squeeze else out


def kernel_system(
    K_train_train: ArrayLike,
    Y_train: ArrayLike,
    f0_train: ArrayLike | None,
    *,
    overwrite: bool,
) -> tuple[np.ndarray, KernelSystem]:
    """Check shapes and set up a kernel-regression system.

    Args:
        K_train_train: ``[N, N]`` scalar kernel, ``[N, N, O, O]`` eNTK, or the eNTK matrix ``[N·O, N·O]``
            (recognised by its size, given ``O > 1``).
        Y_train: ``[N, O]`` targets, or ``[N]`` for one output.
        f0_train: ``[N, O]`` (or ``[N]``) network outputs at initialisation; ``None`` for zero.
        overwrite: allow the matrix to be the memory of ``K_train_train`` when that already is a contiguous
            float64 array or CPU tensor (the solvers then destroy it) instead of a copy.

    Returns:
        ``(A, system)``: the system matrix ``[rows, rows]``, float64 in Fortran order and free to be
        destroyed (see NOTE [In-place factorisation]), and the :class:`KernelSystem`.

    Raises:
        ValueError: on inconsistent shapes or non-finite kernel entries.
    """
    R, squeeze = residual(Y_train, f0_train)
    N, O = R.shape
    source, fresh = _to_float64(K_train_train)
    if source.shape == (N, N, O, O):
        A, matrix_valued = entk_as_matrix(source), True
    elif source.shape == (N, N):
        A, matrix_valued = source, False
    elif O > 1 and source.shape == (N * O, N * O):
        A, matrix_valued = source, True
    else:
        raise ValueError(
            f"K_train_train has shape {source.shape}; with Y_train of shape {(N, O)} it must be "
            f"[N, N] = {(N, N)} (scalar kernel), [N, N, O, O] = {(N, N, O, O)} (eNTK), "
            f"or [N·O, N·O] = {(N * O, N * O)} (eNTK matrix)"
        )
    if not (fresh or overwrite) and np.may_share_memory(A, source):
        A = A.copy()
    A = _fortran(A)
    _check_finite(A, "K_train_train")
    system = KernelSystem(R=R.reshape(A.shape[0], -1), N=N, O=O, matrix_valued=matrix_valued, squeeze=squeeze)
    return A, system


def outputs_like(f: ArrayLike, shape: tuple[int, int], name: str) -> np.ndarray:
    """Network outputs ``[n, O]`` (or ``[n]`` when ``O = 1``) as float64 ``[n, O]``."""
    a = as_float64(f)
    if a.shape == shape[:1] and shape[1] == 1:
        a = a[:, None]
    if a.shape != shape:
        raise ValueError(f"{name} must have shape {shape}; got {a.shape}")
    return a


def residual(Y_train: ArrayLike, f0_train: ArrayLike | None) -> tuple[np.ndarray, bool]:
    """``Y − f0(X)`` as float64 ``[N, O]``, and whether ``Y_train`` was one-dimensional ``[N]``."""
    Y = as_float64(Y_train)
    squeeze = Y.ndim == 1
    if squeeze:
        Y = Y[:, None]
    if Y.ndim != 2 or 0 in Y.shape:
        raise ValueError(f"Y_train must be [N, O] or [N] with N, O ≥ 1; got shape {Y.shape}")
    if f0_train is not None:
        Y = Y - outputs_like(f0_train, Y.shape, "f0_train")
    return Y, squeeze


def add_ridge(A: np.ndarray, ridge: float) -> None:
    """``A += ridge · I`` in place."""
    if ridge < 0:
        raise ValueError(f"ridge must be non-negative; got {ridge}")
    if ridge:
        i = np.arange(A.shape[0])
        A[i, i] += ridge


def null_mask(w: np.ndarray, rtol: float) -> np.ndarray:
    """Eigenvalues counted as zero: ``|λ| ≤ rtol · max|λ|``."""
    return np.abs(w) <= rtol * np.abs(w).max(initial=0.0)


def eigh_in_place(A: np.ndarray, *, lower: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Eigendecomposition ``A = V diag(w) Vᵀ`` of a symmetric Fortran-ordered matrix, destroying ``A``.

    The ``evr`` driver needs ``O(n)`` workspace where ``evd`` needs ``2n²``.
    """
    return eigh(A, lower=lower, overwrite_a=True, check_finite=False, driver="evr")


def cholesky_in_place(A: np.ndarray) -> int:
    """Overwrite the lower triangle of the symmetric matrix ``A`` with its Cholesky factor ``L`` (``A = L Lᵀ``).

    Blocked, see NOTE [Blocked Cholesky]. The strict upper triangle is left untouched.

    Args:
        A: ``[n, n]`` float64 in Fortran order.

    Returns:
        ``0`` on success, else the order of the first leading minor that is not positive definite (LAPACK's
        ``info``); the lower triangle is then partly overwritten.
    """
    n = A.shape[0]
    for j in range(0, n, _BLOCK):
        k = min(j + _BLOCK, n)
        if j:
            # Left-looking: update block column j with the finished columns :j. Only the lower triangle
            # of the diagonal block changes, so the upper triangle keeps the matrix.
            L_j = A[j:k, :j]
            A[j:k, j:k] -= np.tril(L_j @ L_j.T)
            A[k:, j:k] -= A[k:, :j] @ L_j.T
        D, info = lapack.dpotrf(A[j:k, j:k], lower=1, clean=0)
        if info:
            return j + info
        A[j:k, j:k] = D
        if k < n:
            # Panel: X Dᵀ = A[k:, j:k], i.e. D Xᵀ = A[k:, j:k]ᵀ.
            A[k:, j:k] = solve_triangular(D, A[k:, j:k].T, lower=True, check_finite=False).T
    return 0


def solve_symmetric(
    A: np.ndarray,
    B: np.ndarray,
    *,
    rtol: float | None,
    on_singular: OnSingular,
    name: str = "K_train_train",
) -> np.ndarray:
    """Solve ``A X = B`` for symmetric ``A``: Cholesky, else the eigendecomposition pseudo-inverse.

    Cholesky (:func:`cholesky_in_place`) is used when it succeeds and the estimated reciprocal condition
    number (LAPACK ``pocon``, 1-norm) exceeds ``rtol``. Otherwise ``A`` is singular, indefinite or
    ill-conditioned and the result is ``X = V diag(1/λ) Vᵀ B`` over the eigenvalues with
    ``|λ| > rtol · max|λ|`` (the Moore–Penrose pseudo-inverse truncated at ``rtol``), after
    ``on_singular`` was applied.

    Args:
        A: ``[n, n]`` float64 in Fortran order; destroyed (see NOTE [In-place factorisation]).
        B: ``[n, k]`` right-hand sides.
        rtol: relative cutoff; ``None`` for ``n · ε``.
        on_singular: what to do before falling back.
        name: the kernel's name in messages.

    Returns:
        ``[n, k]`` float64 solution.

    Raises:
        IllConditionedKernelError: if the fallback is needed and ``on_singular`` is ``RAISE``.
    """
    n = A.shape[0]
    rtol = default_rtol(n) if rtol is None else rtol
    anorm = lapack.dlange("1", A)
    diagonal = A.diagonal().copy()
    info = cholesky_in_place(A)
    if info == 0:
        rcond, _ = lapack.dpocon(A, anorm, uplo=b"L")
        if rcond > rtol:
            return lapack.dpotrs(A, B, lower=1)[0]
        cond = np.inf if rcond == 0 else 1 / rcond
        reason = f"is ill-conditioned: its estimated condition number {cond:.3g} exceeds 1/rtol = {1 / rtol:.3g}"
    else:
        reason = f"is not positive definite (Cholesky failed at leading minor {info} of {n})"
    if on_singular is OnSingular.RAISE:
        raise IllConditionedKernelError(f"{name} {reason}; add ridge > 0 for a regularised solve")
    np.fill_diagonal(A, diagonal)
    w, V = eigh_in_place(A, lower=False)
    null = null_mask(w, rtol)
    inverse = np.divide(1.0, w, out=np.zeros_like(w), where=~null)
    X = V @ (inverse[:, None] * (V.T @ B))
    if on_singular is OnSingular.WARN:
        warnings.warn(
            f"{name} {reason}; fell back to the eigendecomposition pseudo-inverse, which discards the "
            f"{int(null.sum())} of {n} eigenvalues with |λ| ≤ rtol · max|λ| = {rtol * np.abs(w).max():.3g}. "
            "Add ridge > 0 for a regularised solve, or pass on_singular='raise' to stop instead.",
            IllConditionedKernelWarning,
            stacklevel=3,  # the caller of the public solver
        )
    return X


def as_linear_operator(op: Any) -> LinearOperator:
    """A float64 SciPy ``LinearOperator`` from a matrix or a matrix-free operator.

    Accepts, in this order: an object with ``to_scipy()``; a NumPy array or torch tensor (an eNTK
    ``[N, N, O, O]`` becomes its ``[N·O, N·O]`` matrix); anything :func:`scipy.sparse.linalg.aslinearoperator`
    accepts (sparse matrices, ``LinearOperator``, objects with ``shape`` and ``matvec``); an object with
    ``shape`` and ``@`` that accepts NumPy vectors and matrices (returning NumPy arrays or tensors).

    Raises:
        TypeError: for anything else.
    """
    if hasattr(op, "to_scipy"):
        op = op.to_scipy()
    if isinstance(op, (np.ndarray, torch.Tensor)):
        op = as_float64(op)
        return aslinearoperator(entk_as_matrix(op) if op.ndim == 4 else op)
    try:
        return aslinearoperator(op)
    except TypeError:
        pass
    if hasattr(op, "shape") and hasattr(op, "__matmul__"):
        shape = tuple(op.shape)
        return LinearOperator(
            shape,
            matvec=lambda v: as_float64(op @ v).reshape(shape[0]),
            matmat=lambda V: as_float64(op @ V),
            dtype=np.float64,
        )
    raise TypeError(
        f"cannot use a {type(op).__name__} as a linear operator: pass an array, a tensor, a scipy "
        "LinearOperator, or an object with `shape` and `matvec` or `@` (or `to_scipy()`)"
    )
