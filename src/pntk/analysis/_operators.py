"""How the analysis functions meet kernels they cannot hold: pntk operators and kernel stores.

Each public analysis function checks :func:`is_matrix_free` at its top and hands such a kernel to
:mod:`pntk.solvers`; dense code never sees it. A store reaching dense code is refused rather than loaded
whole (:func:`refuse_whole_load`): loading is the user's decision (``np.asarray(store)``).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch


def is_matrix_free(*kernels: Any) -> bool:
    """Whether any of ``kernels`` is a pntk operator or a :class:`pntk.KernelStore`."""
    from ..operators.base import LinearOperator
    from ..store import KernelStore

    return any(isinstance(K, (LinearOperator, KernelStore)) for K in kernels)


def refuse_whole_load(x: Any) -> None:
    """Raise if ``x`` is a kernel store or a pntk operator, which dense code would read whole.

    Raises:
        TypeError: saying how to load it explicitly, or which matrix-free function to use.
    """
    from ..operators.base import LinearOperator
    from ..store import KernelStore

    if isinstance(x, KernelStore):
        raise TypeError(
            f"this analysis needs the whole kernel in memory, and {x!r} holds {x.nbytes / 1e9:.3g} GB; load it "
            "yourself with np.asarray(store) if it fits, or use a matrix-free analysis (extreme_eigenvalues, "
            "kernel_regression, gradient_flow, pntk.solvers)"
        )
    if isinstance(x, LinearOperator):
        raise TypeError(
            f"this analysis needs the whole kernel in memory, not a {type(x).__name__}; compute it with "
            "pntk.kernel, or use a matrix-free analysis (extreme_eigenvalues, kernel_regression, gradient_flow, "
            "pntk.solvers)"
        )


def extreme_eigenvalues(op: Any, k: int, which: str, *, tol: float, maxiter: int | None, seed: int | None):
    """:func:`pntk.analysis.extreme_eigenvalues` by block Lanczos (:func:`pntk.solvers.eigsh`); ``tol = 0`` asks
    for residuals at ``1e-10`` of ``λ_max``."""
    from ..solvers import SolverOptions, eigsh

    options = SolverOptions(tol=tol or 1e-10, maxiter=maxiter, seed=0 if seed is None else seed)
    return eigsh(op, k, which, options=options).eigenvalues.cpu().numpy()


def kernel_regression(
    K_train_train: Any,
    K_test_train: Any,
    Y_train: Any,
    *,
    f0_train: Any,
    f0_test: Any,
    ridge: float,
    tol: float,
    maxiter: int | None,
    on_singular: Any,
):
    """:func:`pntk.analysis.kernel_regression` by PCG (:func:`pntk.solvers.ridge_regression`): the solvers'
    default preconditioner with a ridge, plain CG without; ``on_singular`` decides what a solve that stops short
    does."""
    import dataclasses
    import warnings

    from ..solvers import ConvergenceWarning, SolverOptions, ridge_regression
    from ._linalg import IllConditionedKernelError, OnSingular

    options = SolverOptions(tol=tol, maxiter=maxiter)
    if ridge <= 0:
        options = dataclasses.replace(options, preconditioner="none")
    with warnings.catch_warnings():
        if on_singular is not OnSingular.WARN:
            warnings.simplefilter("ignore", ConvergenceWarning)
        result = ridge_regression(
            K_train_train, K_test_train, Y_train, ridge=ridge, f0_train=f0_train, f0_test=f0_test, options=options
        )
    if not result.cg.converged and on_singular is OnSingular.RAISE:
        if result.cg.rounding_limited:
            advice = (
                f"the rounding of the kernel's {str(kernel_dtype_of(K_train_train)).removeprefix('torch.')} "
                "products stops it there: build the operator in float64, or pass a larger rtol"
            )
        else:
            advice = "add ridge > 0 or raise maxiter"
        raise IllConditionedKernelError(
            f"conjugate gradients did not reach tol = {tol:g} in {result.cg.iterations} iterations (relative "
            f"residual {result.cg.residual.max().item():.3g}); {advice}"
        )
    if result.predictions is None:
        raise ValueError("K_test_train is required: pass the cross kernel K(x_test, X)")
    return result.predictions.cpu().numpy()


def gradient_flow(
    K_train_train: Any, K_test_train: Any, Y_train: Any, t: Any, *, learning_rate: float, f0_train, f0_test
):
    """:func:`pntk.analysis.gradient_flow` by Lanczos (:func:`pntk.solvers.gradient_flow`)."""
    from ..solvers import gradient_flow as flow
    from .dynamics import GradientFlowPredictions

    result = flow(
        K_train_train, K_test_train, Y_train, t, learning_rate=learning_rate, f0_train=f0_train, f0_test=f0_test
    )
    test = None if result.test is None else result.test.cpu().numpy()
    return GradientFlowPredictions(result.train.cpu().numpy(), test)


def matrix_shape(kernel: Any) -> tuple[int, int]:
    """The shape of a kernel as a matrix: ``(N1, N2)``, or ``(N1·O, N2·O)`` for an eNTK (store, operator or
    array ``[N1, N2, O, O]``)."""
    from ..store import KernelStore

    shape = tuple(kernel.shape) if isinstance(kernel, KernelStore) or hasattr(kernel, "shape") else np.shape(kernel)
    if len(shape) == 4:
        return shape[0] * shape[2], shape[1] * shape[3]
    return shape[0], shape[1]


def row_block(kernel: Any, rows: slice, O: int) -> np.ndarray:
    """Rows ``rows`` (samples) of a kernel in float64: ``[c, N2]``, or ``[c, N2, O, O]`` for an eNTK.

    A store reads its row chunks (a symmetric store holds both triangles); an operator gives the columns of its
    transpose, which for a symmetric one is itself; an array is sliced.
    """
    from ..operators.base import LinearOperator
    from ..store import KernelStore
    from ._linalg import as_float64, entk_as_blocks

    if isinstance(kernel, KernelStore):
        return np.asarray(kernel[rows], dtype=np.float64)
    if isinstance(kernel, LinearOperator):
        index = torch.arange(rows.start * O, rows.stop * O)
        block = kernel.T.columns(index).T.to("cpu", torch.float64).numpy()  # [c·O, N2·O]
        return block if O == 1 else entk_as_blocks(block, rows.stop - rows.start, kernel.shape[1] // O, O)
    block = as_float64(kernel)
    if block.ndim == 2 and O > 1:
        return entk_as_blocks(block[rows.start * O : rows.stop * O], rows.stop - rows.start, block.shape[1] // O, O)
    return block[rows]


def max_diagonal(kernel: Any) -> float:
    """The largest diagonal entry of a square kernel (store, operator or array) without reading it whole."""
    from ..operators.base import LinearOperator
    from ..store import KernelStore

    if isinstance(kernel, KernelStore):
        kernel = kernel.operator()
    if isinstance(kernel, LinearOperator):
        return float(kernel.diagonal().max())
    A = np.asarray(kernel)
    return float(np.einsum("nnaa->na", A).max() if A.ndim == 4 else np.diagonal(A).max())


def kernel_dtype_of(kernel: Any) -> torch.dtype:
    """The dtype a store, an operator or an array holds its kernel in."""
    from ..store import KernelStore
    from ._linalg import kernel_precision

    if isinstance(kernel, KernelStore):
        return kernel_precision(np.zeros(0, dtype=kernel.dtype))
    if isinstance(kernel.dtype, torch.dtype):
        return kernel.dtype
    return kernel_precision(kernel)
