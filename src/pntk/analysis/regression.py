"""Kernel regression: the linearised network trained to convergence on the squared loss.

Two solvers share one set of conventions. :func:`kernel_regression` factorises a dense train kernel, scalar
(the pNTK or trace NTK, one ``N × N`` factorisation for all ``O`` outputs) or matrix-valued (the eNTK, one
``N·O × N·O`` solve). :func:`kernel_regression_cg` never forms the kernel: it runs conjugate gradients on a
matrix-free scalar kernel (anything with a matvec or ``@``).
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import torch
from scipy import sparse
from scipy.sparse.linalg import aslinearoperator, cg

from pntk.analysis import _operators
from pntk.analysis._linalg import (
    ArrayLike,
    IllConditionedKernelError,
    IllConditionedKernelWarning,
    OnSingular,
    add_ridge,
    as_float64,
    as_linear_operator,
    as_matrix_torch,
    kernel_precision,
    kernel_system,
    on_accelerator,
    outputs_like,
    residual,
    solve_symmetric,
    solve_torch,
)
from pntk.analysis._operators import is_matrix_free
from pntk.choices import parse_enum

__all__ = ["kernel_regression", "kernel_regression_cg"]


def kernel_regression(
    K_train_train: ArrayLike,
    K_test_train: ArrayLike,
    Y_train: ArrayLike,
    *,
    f0_train: ArrayLike | None = None,
    f0_test: ArrayLike | None = None,
    ridge: float = 0.0,
    rtol: float | None = None,
    on_singular: OnSingular | str = "warn",
    overwrite_kernel: bool = False,
    kernel_dtype: torch.dtype | str | None = None,
) -> np.ndarray:
    r"""Predictions of kernel (ridge) regression, the linearised network at ``t → ∞``.

    .. math::

        f(x) = f_0(x) + \Theta(x, X)\,(\Theta(X, X) + \lambda I)^{-1}\,(Y - f_0(X))

    With a scalar kernel ``K`` (pNTK, trace NTK) the same formula is applied to each of the ``O`` columns of
    ``Y`` — one ``N × N`` factorisation, ``O`` right-hand sides. With the eNTK ``Θ`` the solve is
    ``N·O × N·O`` with ``Y`` flattened, row ``n·O + a``. For ``Θ = K ⊗ I`` the two coincide, with or
    without a ridge; for a general ``Θ`` they do not.

    Solver: Cholesky of ``K_train_train + ridge·I`` in float64, in place. If it fails (the kernel is not
    positive definite) or its estimated reciprocal condition number (LAPACK ``pocon``, 1-norm) is at most
    the cut-off, ``on_singular`` decides: by default an :class:`IllConditionedKernelWarning` is emitted and
    the result is computed with the pseudo-inverse from an eigendecomposition, discarding the eigenvalues
    below the cut-off — for a singular kernel the minimum-norm interpolant, which is also the ``t → ∞``
    limit of :func:`pntk.analysis.gradient_flow`. The cut-off follows the precision the kernel was
    computed in: ``n·ε₆₄·max|λ|`` for float64, and at least the rounding noise ``2√n·ε·max K_ii`` for a
    float32 (or lower) kernel, so that a ridgeless solve never inverts rounding noise (see NOTE [Rounding
    noise of a kernel] in :mod:`pntk.analysis._linalg`). A kernel on a GPU is solved there by ``eigh``,
    in float64 when it fits (NOTE [Kernels on an accelerator]).

    Memory: one float64 copy of the train kernel (none with ``overwrite_kernel=True`` and a float64 input),
    factorised in place; the fallback adds one matrix of eigenvectors of the same size. A scalar kernel of
    ``N = 20,000`` needs 3.2 GB (6.4 GB in the fallback). Cost: ``N³/3`` flops for the Cholesky factor
    (``(N·O)³/3`` for the eNTK), about ten times that for the fallback.

    Args:
        K_train_train: ``[N, N]`` scalar kernel, ``[N, N, O, O]`` eNTK, or the eNTK matrix ``[N·O, N·O]``.
            Symmetric; only one triangle is read.
        K_test_train: ``[M, N]`` for a scalar kernel; ``[M, N, O, O]`` or ``[M·O, N·O]`` for the eNTK.
            Either may also be a pntk operator (:func:`pntk.operator`) or a :class:`pntk.KernelStore`
            (streamed, never loaded whole): then the solve is preconditioned conjugate gradients to relative
            residual ``rtol`` (default ``1e-10``) by :func:`pntk.solvers.ridge_regression`, and a solve that
            stops short is handled by ``on_singular``.
        Y_train: ``[N, O]`` targets, or ``[N]`` for one output.
        f0_train: ``[N, O]`` outputs of the network at initialisation on the train inputs; ``None`` for 0.
        f0_test: ``[M, O]`` the same on the test inputs; ``None`` for 0.
        ridge: ``λ ≥ 0`` added to the diagonal of the train kernel.
        rtol: relative threshold for the reciprocal condition number and the eigenvalue cutoff of the
            fallback; ``None`` for the precision-aware default above (``n = N`` scalar, ``N·O`` eNTK).
        on_singular: ``"warn"`` (warn and fall back), ``"raise"`` (raise :class:`IllConditionedKernelError`)
            or ``"ignore"`` (fall back silently).
        overwrite_kernel: let the solver destroy ``K_train_train`` instead of copying it, when it is a
            contiguous float64 NumPy array or CPU tensor (halves the memory at large ``N``).
        kernel_dtype: the dtype the kernel was computed in; ``None`` for the dtype ``K_train_train``
            carries. Pass ``torch.float32`` for a float64 copy of a float32 kernel.

    Returns:
        ``[M, O]`` float64 predictions (``[M]`` if ``Y_train`` is ``[N]``).

    Raises:
        ValueError: on inconsistent shapes, a negative ridge or non-finite kernel entries.
        IllConditionedKernelError: if the kernel is singular or ill-conditioned and ``on_singular="raise"``.

    Example:
        >>> import numpy as np
        >>> K = np.array([[2.0, 1.0], [1.0, 2.0]])
        >>> Y = np.array([[1.0, 0.0], [0.0, 1.0]])
        >>> np.allclose(kernel_regression(K, K, Y), Y)  # interpolates the train set
        True
        >>> kernel_regression(K, K[:1], Y, ridge=1.0).shape
        (1, 2)
    """
    on_singular = parse_enum(OnSingular, on_singular, "on_singular value")
    if is_matrix_free(K_train_train, K_test_train):
        return _operators.kernel_regression(
            K_train_train,
            K_test_train,
            Y_train,
            f0_train=f0_train,
            f0_test=f0_test,
            ridge=ridge,
            tol=rtol or 1e-10,
            maxiter=None,
            on_singular=on_singular,
        )
    precision = kernel_precision(K_train_train, kernel_dtype)
    if isinstance(K_train_train, torch.Tensor) and on_accelerator(K_train_train):
        return _kernel_regression_on_device(
            K_train_train, K_test_train, Y_train, f0_train, f0_test, ridge, rtol, on_singular, precision
        )
    A, system = kernel_system(K_train_train, Y_train, f0_train, overwrite=overwrite_kernel)
    add_ridge(A, ridge)
    coefficients = solve_symmetric(A, system.R, rtol=rtol, on_singular=on_singular, kernel_dtype=precision)
    del A  # the spent factor (3.2 GB at N = 20,000), before the test kernel is converted
    F = system.test_matrix(K_test_train) @ coefficients
    return system.outputs(F[:, None, :], f0_test, "f0_test")[0]


def _kernel_regression_on_device(
    K_train_train: torch.Tensor,
    K_test_train: ArrayLike,
    Y_train: ArrayLike,
    f0_train: ArrayLike | None,
    f0_test: ArrayLike | None,
    ridge: float,
    rtol: float | None,
    on_singular: OnSingular,
    precision: torch.dtype,
) -> np.ndarray:
    """:func:`kernel_regression` for a kernel on an accelerator, solved there (NOTE [Kernels on an accelerator])."""
    R, squeeze = residual(Y_train, f0_train)
    N, O = R.shape
    A = as_matrix_torch(K_train_train)
    matrix_valued = K_train_train.ndim == 4 or (O > 1 and tuple(A.shape) == (N * O, N * O))
    rows = N * O if matrix_valued else N
    if tuple(A.shape) != (rows, rows):
        raise ValueError(
            f"K_train_train has shape {tuple(K_train_train.shape)}; with Y_train of shape {(N, O)} it must be "
            f"[N, N], [N, N, O, O] or [N·O, N·O]"
        )
    if ridge < 0:
        raise ValueError(f"ridge must be non-negative; got {ridge}")
    if not bool(torch.isfinite(A).all()):
        raise ValueError("K_train_train contains NaN or inf entries")
    B = torch.as_tensor(R.reshape(rows, -1), device=A.device)
    A = A.to(torch.float64) if ridge else A
    if ridge:
        A = A + ridge * torch.eye(rows, dtype=A.dtype, device=A.device)
    coefficients = solve_torch(A, B, rtol=rtol, on_singular=on_singular, kernel_dtype=precision)
    test = torch.as_tensor(K_test_train, device=A.device)
    test = as_matrix_torch(test).to(coefficients.dtype)
    if test.shape[1] != rows:
        raise ValueError(f"K_test_train has shape {tuple(K_test_train.shape)}; it must match K_train_train")
    F = (test @ coefficients).to("cpu", torch.float64).numpy().reshape(-1, O)
    if f0_test is not None:
        F = F + outputs_like(f0_test, F.shape, "f0_test")
    return F[:, 0] if squeeze else F


def kernel_regression_cg(
    K_train_train: Any,
    K_test_train: Any,
    Y_train: ArrayLike,
    *,
    f0_train: ArrayLike | None = None,
    f0_test: ArrayLike | None = None,
    ridge: float = 0.0,
    rtol: float = 1e-10,
    maxiter: int | None = None,
    on_singular: OnSingular | str = "warn",
) -> np.ndarray:
    r"""Kernel (ridge) regression with a scalar kernel by conjugate gradients, matrix-free.

    Solves :math:`(K(X, X) + \lambda I)\,c_a = Y_a - f_0(X)_a` for each output ``a`` with
    :func:`scipy.sparse.linalg.cg` and returns :math:`f_0(x) + K(x, X)\,c`, the same predictions as
    :func:`kernel_regression` with a scalar kernel. Each iteration is one product with the train kernel, so
    the kernel never has to be stored: pass an operator that computes ``K @ v``.

    Conjugate gradients need a positive (semi-)definite kernel and converge in about
    :math:`\sqrt{\kappa}` iterations; a ridge bounds :math:`\kappa`. If an output does not converge to
    ``rtol`` within ``maxiter`` iterations, ``on_singular`` decides: by default an
    :class:`IllConditionedKernelWarning` is emitted and the last iterate is used.

    Args:
        K_train_train: ``[N, N]`` kernel: an array, tensor, SciPy ``LinearOperator``, or any object
            :func:`pntk.analysis.extreme_eigenvalues` accepts (``shape`` and ``matvec`` or ``@``).
        K_test_train: ``[M, N]`` kernel, in any of the same forms (only products with ``[N, O]`` blocks).
            A pntk operator or :class:`pntk.KernelStore` for either goes to
            :func:`pntk.solvers.ridge_regression` (Nyström-preconditioned with a ridge).
        Y_train: ``[N, O]`` targets, or ``[N]`` for one output.
        f0_train: ``[N, O]`` network outputs at initialisation on the train inputs; ``None`` for 0.
        f0_test: ``[M, O]`` the same on the test inputs; ``None`` for 0.
        ridge: ``λ ≥ 0`` added to the kernel.
        rtol: relative residual tolerance ``‖(K + λI)c − r‖ ≤ rtol · ‖r‖`` per output.
        maxiter: iteration limit per output; ``None`` for SciPy's default ``10 N``.
        on_singular: ``"warn"``, ``"raise"`` or ``"ignore"`` on non-convergence (as in
            :func:`kernel_regression`).

    Returns:
        ``[M, O]`` float64 predictions (``[M]`` if ``Y_train`` is ``[N]``).

    Raises:
        ValueError: on inconsistent shapes or a negative ridge.
        IllConditionedKernelError: if an output did not converge and ``on_singular="raise"``.

    Example:
        >>> import numpy as np
        >>> K = np.array([[2.0, 1.0], [1.0, 2.0]])
        >>> Y = np.array([1.0, -1.0])
        >>> np.round(kernel_regression_cg(K, K, Y), 8)
        array([ 1., -1.])
    """
    on_singular = parse_enum(OnSingular, on_singular, "on_singular value")
    if ridge < 0:
        raise ValueError(f"ridge must be non-negative; got {ridge}")
    if is_matrix_free(K_train_train, K_test_train):
        return _operators.kernel_regression(
            K_train_train,
            K_test_train,
            Y_train,
            f0_train=f0_train,
            f0_test=f0_test,
            ridge=ridge,
            tol=rtol,
            maxiter=maxiter,
            on_singular=on_singular,
        )
    R, squeeze = residual(Y_train, f0_train)
    N, O = R.shape
    A = as_linear_operator(K_train_train)
    if A.shape != (N, N):
        raise ValueError(f"K_train_train has shape {A.shape}; with Y_train of {N} samples it must be {(N, N)}")
    if ridge:
        A = A + ridge * aslinearoperator(sparse.identity(N, format="dia"))
    B = as_linear_operator(K_test_train)
    if B.shape[1] != N:
        raise ValueError(f"K_test_train has shape {B.shape}; it must be [M, {N}]")

    coefficients = np.empty((N, O))
    for a in range(O):
        coefficients[:, a], info = cg(A, R[:, a], rtol=rtol, atol=0.0, maxiter=maxiter)
        if info != 0:
            message = (
                f"conjugate gradients did not reach rtol = {rtol:g} for output {a} "
                f"({'breakdown' if info < 0 else f'{info} iterations'}): K_train_train may be "
                "ill-conditioned or indefinite; add ridge > 0 or raise maxiter"
            )
            if on_singular is OnSingular.RAISE:
                raise IllConditionedKernelError(message)
            if on_singular is OnSingular.WARN:
                warnings.warn(message, IllConditionedKernelWarning, stacklevel=2)

    F = as_float64(B.matmat(coefficients))
    if f0_test is not None:
        F = F + outputs_like(f0_test, F.shape, "f0_test")
    return F[:, 0] if squeeze else F
