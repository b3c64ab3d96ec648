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

# NOTE: [Rounding noise of a kernel]
# A kernel computed in float32 is a float64 matrix plus rounding errors: each entry K_ij = Σ_p J_ip J_jp
# carries an error of about ε·√(K_ii K_jj), ε the unit roundoff of the dtype it was computed in. Errors of
# random sign form a matrix E whose spectral norm is about 2√n times its entries, so every eigenvalue of
# the computed kernel is only known to within
#     noise = 2√n · ε · max_i K_ii.
# Eigenvalues below that are noise, and inverting them fills a ridgeless solve with noise: the pNTK of a
# small ConvNet trained on 500 digits, computed in float32 and solved with a float64 cut-off (n·ε₆₄·λ_max),
# scores 0.13 test accuracy where the same kernel in float64 scores 0.94; discarding the eigenvalues below
# the float32 noise gives 0.95 (tests/analysis/test_precision.py). For float64 kernels the cut-off stays
# the conventional n·ε₆₄·λ_max, far above that noise. Because a float64 copy of a float32 kernel no longer
# says where it came from, the solvers and ``compare`` take ``kernel_dtype=`` to be told.

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
    """Relative eigenvalue cutoff of an ``n × n`` float64 symmetric matrix: ``n · ε`` (float64 rounding level)."""
    return n * _EPS


def kernel_precision(K: Any, kernel_dtype: torch.dtype | str | None = None) -> torch.dtype:
    """The dtype ``K`` was computed in: ``kernel_dtype`` when given, else the dtype ``K`` carries.

    A float64 copy of a float32 kernel carries float64; pass ``kernel_dtype=torch.float32`` for it (see
    NOTE [Rounding noise of a kernel]).

    Example:
        >>> kernel_precision(torch.zeros(2, 2)), kernel_precision(np.zeros((2, 2)), "float32")
        (torch.float32, torch.float32)
    """
    if kernel_dtype is not None:
        dtype = getattr(torch, kernel_dtype) if isinstance(kernel_dtype, str) else kernel_dtype
        if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
            raise ValueError(
                f"kernel_dtype must be a floating torch dtype or its name, e.g. 'float32'; got {kernel_dtype!r}"
            )
        return dtype
    if isinstance(K, torch.Tensor) and K.dtype.is_floating_point:
        return K.dtype
    if isinstance(K, np.ndarray) and K.dtype in (np.float16, np.float32):
        return torch.float16 if K.dtype == np.float16 else torch.float32
    return torch.float64


def noise_floor(max_diagonal: float, n: int, dtype: torch.dtype) -> float:
    """``2√n · ε · max_i K_ii``: how far rounding in ``dtype`` moves the eigenvalues of an ``n × n`` kernel.

    See NOTE [Rounding noise of a kernel].

    Example:
        >>> round(noise_floor(1.0, 100, torch.float32), 10)
        2.3842e-06
    """
    return 2.0 * float(np.sqrt(n)) * torch.finfo(dtype).eps * max(float(max_diagonal), 0.0)


@dataclass(frozen=True)
class Cutoff:
    """Eigenvalues counted as zero: ``|λ| ≤ max(rtol · max|λ|, atol)``.

    Attributes:
        rtol: relative part.
        atol: absolute part (the rounding noise of a reduced-precision kernel, else 0).
        reason: how the cut-off was chosen, for messages.
    """

    rtol: float
    atol: float = 0.0
    reason: str = ""

    def threshold(self, largest: float) -> float:
        """The cut-off for a matrix whose largest ``|λ|`` is ``largest``."""
        return max(self.rtol * largest, self.atol)


def cutoff_for(A: Any, n: int, rtol: float | None, dtype: torch.dtype) -> Cutoff:
    """The eigenvalue cut-off of the symmetric ``n × n`` matrix ``A`` (NumPy or torch) computed in ``dtype``.

    ``rtol`` given: ``rtol · max|λ|``. Otherwise ``n · ε₆₄ · max|λ|`` for float64 and, for a kernel computed
    in a lower precision, also at least its rounding noise :func:`noise_floor`.
    """
    if rtol is not None:
        return Cutoff(rtol, 0.0, f"rtol = {rtol:.3g}")
    if dtype == torch.float64:
        return Cutoff(default_rtol(n), 0.0, "the float64 rounding level n·ε")
    diagonal = A.diagonal()
    largest = float(diagonal.max()) if n else 0.0
    floor = noise_floor(largest, n, dtype)
    name = str(dtype).removeprefix("torch.")
    return Cutoff(
        default_rtol(n),
        floor,
        f"the {name} rounding noise 2√n·ε·max K_ii = {floor:.3g} (the kernel was computed in {name})",
    )


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


def condition_number(lambda_max: float, lambda_min: float, n: int, floor: float = 0.0) -> float:
    """``κ = λ_max / λ_min``, or ``inf`` when ``λ_min ≤ max(n·ε·λ_max, floor)`` (numerically singular, or
    indefinite); ``floor`` is the rounding noise of a reduced-precision kernel (:func:`noise_floor`)."""
    if lambda_max <= 0 or lambda_min <= max(default_rtol(n) * lambda_max, floor):
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


def null_mask(w: np.ndarray, cutoff: float | Cutoff) -> np.ndarray:
    """Eigenvalues counted as zero: ``|λ| ≤ cutoff.threshold(max|λ|)`` (a float is a relative ``rtol``)."""
    cutoff = cutoff if isinstance(cutoff, Cutoff) else Cutoff(cutoff)
    return np.abs(w) <= cutoff.threshold(float(np.abs(w).max(initial=0.0)))


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
    kernel_dtype: torch.dtype = torch.float64,
) -> np.ndarray:
    """Solve ``A X = B`` for symmetric ``A``: Cholesky, else the eigendecomposition pseudo-inverse.

    The cut-off (:func:`cutoff_for`) is ``rtol · max|λ|``, by default ``n·ε₆₄·max|λ|`` and, for a kernel
    computed in a lower precision (``kernel_dtype``), at least its rounding noise (NOTE [Rounding noise of
    a kernel]). Cholesky (:func:`cholesky_in_place`) is used when it succeeds and the estimated reciprocal
    condition number (LAPACK ``pocon``, 1-norm) exceeds the cut-off relative to ``‖A‖_1``. Otherwise ``A``
    is singular, indefinite or ill-conditioned at that level and the result is ``X = V diag(1/λ) Vᵀ B``
    over the eigenvalues above the cut-off (the pseudo-inverse truncated there), after ``on_singular`` was
    applied.

    Args:
        A: ``[n, n]`` float64 in Fortran order; destroyed (see NOTE [In-place factorisation]).
        B: ``[n, k]`` right-hand sides.
        rtol: relative cutoff; ``None`` for the default above.
        on_singular: what to do before falling back.
        name: the kernel's name in messages.
        kernel_dtype: the dtype the kernel was computed in.

    Returns:
        ``[n, k]`` float64 solution.

    Raises:
        IllConditionedKernelError: if the fallback is needed and ``on_singular`` is ``RAISE``.
    """
    n = A.shape[0]
    cutoff = cutoff_for(A, n, rtol, kernel_dtype)
    anorm = lapack.dlange("1", A)
    diagonal = A.diagonal().copy()
    info = cholesky_in_place(A)
    if info == 0:
        rcond, _ = lapack.dpocon(A, anorm, uplo=b"L")
        relative = cutoff.threshold(anorm) / anorm if anorm > 0 else cutoff.rtol
        if rcond > relative:
            return lapack.dpotrs(A, B, lower=1)[0]
        cond = np.inf if rcond == 0 else 1 / rcond
        reason = f"is ill-conditioned: its estimated condition number {cond:.3g} exceeds {1 / relative:.3g}"
    else:
        reason = f"is not positive definite (Cholesky failed at leading minor {info} of {n})"
    if on_singular is OnSingular.RAISE:
        raise IllConditionedKernelError(f"{name} {reason}; add ridge > 0 for a regularised solve")
    np.fill_diagonal(A, diagonal)
    w, V = eigh_in_place(A, lower=False)
    null = null_mask(w, cutoff)
    inverse = np.divide(1.0, w, out=np.zeros_like(w), where=~null)
    X = V @ (inverse[:, None] * (V.T @ B))
    if on_singular is OnSingular.WARN:
        _warn_cutoff(name, reason, int(null.sum()), n, cutoff, float(np.abs(w).max(initial=0.0)))
    return X


def _warn_cutoff(name: str, reason: str, dropped: int, n: int, cutoff: Cutoff, largest: float) -> None:
    warnings.warn(
        f"{name} {reason}; fell back to the eigendecomposition pseudo-inverse, which discards the "
        f"{dropped} of {n} eigenvalues with |λ| ≤ {cutoff.threshold(largest):.3g} ({cutoff.reason}). "
        "Add ridge > 0 for a regularised solve, or pass on_singular='raise' to stop instead.",
        IllConditionedKernelWarning,
        stacklevel=4,  # the caller of the public solver
    )


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


# NOTE: [Kernels on an accelerator]
# A kernel that lives on a GPU is solved and decomposed there, with torch.linalg, rather than copied to
# NumPy: in float64 when the matrix and its eigenvectors fit in a third of the device's free memory (GPUs
# decompose float64 at a fraction of their float32 rate, but the matrices of these analyses are small),
# else in the kernel's own dtype. The dense path on an accelerator always uses the eigendecomposition
# (``eigh``), whose cut-off is the same :class:`Cutoff` as on the CPU, instead of Cholesky plus a
# condition estimate that torch does not offer.


def on_accelerator(x: Any) -> bool:
    """Whether ``x`` is a torch tensor on a device other than the CPU."""
    return isinstance(x, torch.Tensor) and x.device.type != "cpu"


def device_float(A: torch.Tensor) -> torch.dtype:
    """float64 when a float64 ``[n, n]`` matrix and its eigenvectors take under a third of the free memory of
    ``A``'s device (always on the CPU), else ``A``'s own dtype. See NOTE [Kernels on an accelerator]."""
    n = A.shape[0]
    if A.device.type == "cpu":
        return torch.float64
    free, _ = torch.cuda.mem_get_info(A.device) if A.device.type == "cuda" else (0, 0)
    return torch.float64 if 3 * 2 * n * n * 8 <= free else A.dtype


def as_matrix_torch(K: torch.Tensor) -> torch.Tensor:
    """An eNTK ``[N1, N2, O, O]`` as its ``[N1·O, N2·O]`` matrix (row ``n·O + a``); a 2-D kernel as is."""
    if K.ndim == 4:
        N1, N2, O, _ = K.shape
        return K.permute(0, 2, 1, 3).reshape(N1 * O, N2 * O)
    return K


def eigh_torch(
    A: torch.Tensor, *, rtol: float | None, kernel_dtype: torch.dtype
) -> tuple[torch.Tensor, torch.Tensor, Cutoff]:
    """Eigendecomposition of a symmetric matrix on its own device (see NOTE [Kernels on an accelerator]).

    Args:
        A: ``[n, n]`` symmetric tensor (only the lower triangle is read).
        rtol: relative cut-off; ``None`` for the default of :func:`cutoff_for`.
        kernel_dtype: the dtype the kernel was computed in.

    Returns:
        ``(w [n], V [n, n], cutoff)``, ascending eigenvalues in the working dtype.
    """
    work = A.detach().to(device_float(A))
    cutoff = cutoff_for(work, A.shape[0], rtol, kernel_dtype)
    w, V = torch.linalg.eigh(work)
    return w, V, cutoff


def solve_torch(
    A: torch.Tensor,
    B: torch.Tensor,
    *,
    rtol: float | None,
    on_singular: OnSingular,
    kernel_dtype: torch.dtype,
    name: str = "K_train_train",
) -> torch.Tensor:
    """``A⁺ B`` truncated at the cut-off of :func:`cutoff_for`, on ``A``'s device.

    The eigenvalues at or below the cut-off are discarded; when there are any (``A`` singular or
    ill-conditioned at that level), ``on_singular`` decides as in :func:`solve_symmetric`.

    Args:
        A: ``[n, n]`` symmetric tensor (ridge already added).
        B: ``[n, k]`` right-hand sides on the same device.
        rtol: relative cut-off; ``None`` for the default.
        on_singular: what to do when eigenvalues are discarded.
        kernel_dtype: the dtype the kernel was computed in.
        name: the kernel's name in messages.

    Returns:
        ``[n, k]`` solution in the working dtype of :func:`device_float`.

    Raises:
        IllConditionedKernelError: if eigenvalues are discarded and ``on_singular`` is ``RAISE``.
    """
    w, V, cutoff = eigh_torch(A, rtol=rtol, kernel_dtype=kernel_dtype)
    largest = float(w.abs().max()) if w.numel() else 0.0
    keep = w.abs() > cutoff.threshold(largest)
    dropped = int((~keep).sum())
    if dropped:
        reason = f"is singular or ill-conditioned at the cut-off {cutoff.threshold(largest):.3g} ({cutoff.reason})"
        if on_singular is OnSingular.RAISE:
            raise IllConditionedKernelError(f"{name} {reason}; add ridge > 0 for a regularised solve")
        if on_singular is OnSingular.WARN:
            _warn_cutoff(name, reason, dropped, A.shape[0], cutoff, largest)
    inverse = torch.where(keep, 1.0 / torch.where(keep, w, torch.ones_like(w)), torch.zeros_like(w))
    return V @ (inverse[:, None] * (V.T @ B.to(w.dtype)))
