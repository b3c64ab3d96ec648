"""Kernel ridge regression with a matrix-free kernel: PCG on the train operator, predictions through the cross
operator ``K(x_test, X)``."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from ..operators.base import LinearOperator
from .cg import CGResult, pcg
from .operand import as_float64, as_operator, product
from .options import SolverOptions


@dataclass(frozen=True)
class TargetLayout:
    """How targets ``Y [N, O]`` meet a train operator: per output column for a scalar kernel ``[N, N]``
    (``c = O`` columns), flattened sample-major for an eNTK ``[N·O, N·O]`` (one column, row ``n·O + a``).

    Attributes:
        Y: ``[N, O]`` float64 targets.
        R: ``[N, O]`` residuals ``Y − f0(X)``.
        matrix_valued: the operator is an eNTK.
        squeeze: the targets were given as ``[N]``.
    """

    Y: Tensor
    R: Tensor
    matrix_valued: bool
    squeeze: bool

    @staticmethod
    def of(op: LinearOperator, Y_train: Any, f0_train: Any | None) -> TargetLayout:
        """The layout for ``op`` and these targets.

        Raises:
            ValueError: the shapes do not fit together.
        """
        Y = as_float64(Y_train, op.device)
        squeeze = Y.dim() == 1
        Y = Y.unsqueeze(1) if squeeze else Y
        if Y.dim() != 2 or 0 in Y.shape:
            raise ValueError(f"Y_train must be [N, O] or [N] with N, O ≥ 1; got shape {list(Y.shape)}")
        N, O = Y.shape
        R = Y
        if f0_train is not None:
            R = Y - as_float64(f0_train, op.device).reshape(Y.shape)
        if op.shape == (N, N):
            return TargetLayout(Y, R, False, squeeze)
        if O > 1 and op.shape == (N * O, N * O):
            return TargetLayout(Y, R, True, squeeze)
        raise ValueError(
            f"the train kernel has shape {op.shape}; with Y_train of shape {(N, O)} it must be {(N, N)} (scalar "
            f"kernel) or {(N * O, N * O)} (eNTK operator)"
        )

    def columns(self, device: torch.device) -> Tensor:
        """The residuals as the right-hand sides ``[rows, c]``."""
        return (self.R.reshape(-1, 1) if self.matrix_valued else self.R).to(device)

    def targets(self, device: torch.device) -> Tensor:
        """The targets in the same layout."""
        return (self.Y.reshape(-1, 1) if self.matrix_valued else self.Y).to(device)

    def outputs(self, F: Tensor, f0: Tensor | None = None) -> Tensor:
        """``[..., rows, c]`` back to ``[..., M, O]`` (plus ``f0`` ``[M, O]``; ``[..., M]`` for targets ``[N]``)."""
        O = self.Y.shape[1]
        F = F.reshape(*F.shape[:-2], -1, O)
        if f0 is not None:
            F = F + f0.reshape(F.shape[-2:])
        return F[..., 0] if self.squeeze else F


@dataclass(frozen=True)
class RegressionResult:
    """Kernel ridge regression, matrix-free.

    Attributes:
        predictions: ``[M, O]`` float64 on the test inputs (``[M]`` for targets ``[N]``), or ``None``.
        coefficients: ``(K + λI)⁻¹ (Y − f0(X))`` ``[rows, c]`` (reuse as ``x0`` for a nearby ridge).
        cg: the solve: iterations, residuals, history, convergence.
    """

    predictions: Tensor | None
    coefficients: Tensor
    cg: CGResult


def ridge_regression(
    K_train_train: Any,
    K_test_train: Any | None,
    Y_train: Any,
    *,
    ridge: float,
    f0_train: Any | None = None,
    f0_test: Any | None = None,
    x0: Any | None = None,
    options: SolverOptions | None = None,
    preconditioner: Callable[[Tensor], Tensor] | None = None,
    exact: Any | None = None,
    exact_test: Any | None = None,
) -> RegressionResult:
    r"""Kernel ridge regression, :math:`f(x) = f_0(x) + K(x, X)\,(K(X, X) + λI)^{-1}(Y − f_0(X))`, by PCG.

    A scalar kernel ``[N, N]`` (pNTK, trace) solves for the ``O`` output columns at once (each product a
    block of ``O`` columns); an eNTK operator ``[N·O, N·O]`` solves for ``Y`` flattened, row ``n·O + a``. The
    predictions are one product of the cross operator ``K(x_test, X)`` with the coefficients.

    Args:
        K_train_train: ``[N, N]`` or ``[N·O, N·O]``: tensor, array, pntk operator (``pntk.operator(model, X)``)
            or kernel store.
        K_test_train: ``[M, N]`` or ``[M·O, N·O]`` (``pntk.operator(model, x_test, X)``); ``None`` to skip
            predictions.
        Y_train: ``[N, O]`` or ``[N]``.
        ridge: ``λ ≥ 0`` (``> 0`` with a preconditioner).
        f0_train, f0_test: network outputs at initialisation; ``None`` for 0.
        x0: warm start for the coefficients ``[rows, c]``.
        options: see :func:`pntk.solvers.pcg` (``preconditioner="kronecker"`` for an eNTK operator).
        preconditioner: a ready ``P⁻¹`` (e.g. :func:`pntk.solvers.kronecker`), overriding ``options``.
        exact: the train kernel in a higher precision: the solve becomes iterative refinement (see
            :func:`pntk.solvers.pcg`).
        exact_test: the cross kernel in that precision, for the predictions (the float32 product of the
            coefficients, whose entries cancel, loses digits that the refinement won).

    Returns:
        :class:`RegressionResult`.

    Raises:
        ValueError: shapes that disagree, a negative ridge.

    Example:
        >>> import torch
        >>> K = torch.tensor([[2.0, 1.0], [1.0, 2.0]], dtype=torch.float64)
        >>> Y = torch.tensor([[1.0, 0.0], [0.0, 1.0]], dtype=torch.float64)
        >>> ridge_regression(K, K, Y, ridge=1e-3).predictions.round(decimals=3)
        tensor([[0.9990, 0.0000],
                [0.0000, 0.9990]], dtype=torch.float64)
    """
    op = as_operator(K_train_train, "K_train_train")
    layout = TargetLayout.of(op, Y_train, f0_train)
    result = pcg(
        op, layout.columns(op.device), ridge=ridge, x0=x0, options=options, preconditioner=preconditioner, exact=exact
    )
    predictions = None
    if K_test_train is not None:
        cross = as_operator(K_test_train if exact_test is None else exact_test, "K_test_train")
        if cross.shape[1] != op.shape[0]:
            raise ValueError(
                f"K_test_train has shape {cross.shape}; its columns must match the train kernel's {op.shape[0]}"
            )
        F = product(cross, result.solution)
        predictions = layout.outputs(F, None if f0_test is None else as_float64(f0_test, op.device))
    return RegressionResult(predictions, result.solution, result)
