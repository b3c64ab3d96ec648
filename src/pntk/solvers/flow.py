"""The linearised network's gradient flow at time ``t`` from Lanczos on the kernel, never forming it."""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor

from .krylov import Tridiagonal, apply_function, lanczos
from .operand import as_float64, as_operator, product
from .options import ConvergenceWarning, SolverOptions
from .regression import TargetLayout


@dataclass(frozen=True)
class FlowResult:
    """Predictions of the linearised network along gradient flow, and how well Lanczos resolved them.

    Attributes:
        train: ``[*t.shape, N, O]`` on the train inputs.
        test: ``[*t.shape, M, O]`` on the test inputs, or ``None``.
        steps: Lanczos steps (products with the ``O`` residual columns, or one column for the eNTK).
        error: the largest estimated error of ``e^{−ηtK} r`` and ``K⁻¹(I − e^{−ηtK}) r`` relative to ``‖r‖``.
        converged: ``error ≤ tol``.
    """

    train: Tensor
    test: Tensor | None
    steps: int
    error: float
    converged: bool


def gradient_flow(
    K_train_train: Any,
    K_test_train: Any | None,
    Y_train: Any,
    t: Any,
    *,
    learning_rate: float = 1.0,
    f0_train: Any | None = None,
    f0_test: Any | None = None,
    options: SolverOptions | None = None,
) -> FlowResult:
    r"""Gradient flow of the linearised network on the squared loss at times ``t``, matrix-free.

    .. math::

        f_t(X) = Y − e^{−ηKt} r, \qquad f_t(x) = f_0(x) + K(x, X)\, φ_t(K)\, r, \qquad
        φ_t(λ) = −\operatorname{expm1}(−ηtλ)/λ,

    with ``r = Y − f_0(X)``. One Lanczos run per column of ``r`` (all columns sharing each product) gives
    ``e^{−ηtK} r`` and ``φ_t(K) r`` for every ``t`` at once; it stops when the a-posteriori error estimate
    of both, for every ``t``, is at most ``tol · ‖r‖`` (checked every five steps), and warns with a
    :class:`ConvergenceWarning` otherwise. A scalar kernel (pNTK, trace) acts on each output column; the eNTK
    operator ``[N·O, N·O]`` on ``r`` flattened (row ``n·O + a``). Large ``η t λ_max`` needs more steps.

    Args:
        K_train_train: ``[N, N]`` or the eNTK ``[N·O, N·O]``: tensor, array, pntk operator or kernel store.
        K_test_train: ``[M, N]`` or ``[M·O, N·O]`` in any of those forms; ``None`` for train predictions only.
        Y_train: ``[N, O]`` targets, or ``[N]``.
        t: finite times ``≥ 0``, a scalar or an array.
        learning_rate: ``η > 0``.
        f0_train, f0_test: network outputs at initialisation, ``[N, O]`` and ``[M, O]``; ``None`` for 0.
        options: ``tol``, ``maxiter`` (Lanczos steps, default ``min(N, 500)``), ``progress``.

    Returns:
        :class:`FlowResult`, float64 tensors on the operator's device.

    Raises:
        ValueError: infinite or negative times, a non-positive rate, shapes that disagree.

    Example:
        >>> import torch
        >>> K = torch.tensor([[2.0, 1.0], [1.0, 2.0]], dtype=torch.float64)
        >>> Y = torch.tensor([[1.0], [-1.0]], dtype=torch.float64)  # an eigenvector of K, eigenvalue 1
        >>> flow = gradient_flow(K, K, Y, [0.0, 1.0])
        >>> torch.allclose(flow.train[1], (1 - torch.exp(torch.tensor(-1.0, dtype=torch.float64))) * Y)
        True
    """
    options = options or SolverOptions()
    op = as_operator(K_train_train, "K_train_train")
    times = torch.as_tensor(np.asarray(t, dtype=np.float64))
    if not bool(torch.isfinite(times).all()) or bool((times < 0).any()):
        raise ValueError(
            f"times must be finite and non-negative; got {t} (the t → ∞ limit is kernel regression: "
            "pntk.solvers.ridge_regression or pntk.analysis.kernel_regression)"
        )
    if not learning_rate > 0:
        raise ValueError(f"learning_rate must be positive; got {learning_rate}")
    layout = TargetLayout.of(op, Y_train, f0_train)
    R = layout.columns(op.device)  # [rows, c]
    eta_t = (learning_rate * times.reshape(-1)).to(op.device).reshape(-1, 1, 1)  # [T, 1, 1]

    def decay(theta: Tensor) -> Tensor:
        return torch.exp(-eta_t * theta.clamp(min=0))

    def phi(theta: Tensor) -> Tensor:
        lam = theta.clamp(min=0)
        safe = torch.where(lam > 0, lam, torch.ones_like(lam))
        return torch.where(lam > 0, -torch.expm1(-eta_t * lam) / safe, eta_t)

    scale = R.norm(dim=0).clamp(min=torch.finfo(torch.float64).tiny)

    def error(tri: Tridiagonal) -> float:
        e1 = apply_function(tri, decay)[1]
        e2 = apply_function(tri, phi)[1]
        lam_max = tri.alpha.abs().max().clamp(min=torch.finfo(torch.float64).tiny)
        return max((e1 / scale).max().item(), (e2 * lam_max / scale).max().item())

    maxiter = options.maxiter or min(R.shape[0], 500)
    tri = lanczos(op, R, maxiter, stop=lambda tri: error(tri) <= options.tol, progress=options.progress)
    err = error(tri)
    converged = err <= options.tol or tri.alpha.shape[1] >= R.shape[0]
    if not converged:
        warnings.warn(
            f"Lanczos for the gradient flow did not reach tol = {options.tol:g} in {tri.alpha.shape[1]} steps "
            f"(estimated relative error {err:.3g}); raise maxiter, or shorten η·t",
            ConvergenceWarning,
            stacklevel=2,
        )
    decayed, _ = apply_function(tri, decay)  # [T, rows, c]
    train = layout.outputs(layout.targets(op.device) - decayed)
    test = None
    if K_test_train is not None:
        cross = as_operator(K_test_train, "K_test_train")
        coefficients, _ = apply_function(tri, phi)  # [T, rows, c]
        T_, rows, c = coefficients.shape
        F = product(cross, coefficients.permute(1, 0, 2).reshape(rows, T_ * c))
        F = F.reshape(-1, T_, c).permute(1, 0, 2)
        test = layout.outputs(F, f0=None if f0_test is None else as_float64(f0_test, op.device))
    shape = tuple(times.shape)
    train = train.reshape(shape + train.shape[1:])
    test = None if test is None else test.reshape(shape + test.shape[1:])
    return FlowResult(train, test, tri.alpha.shape[1], err, converged)
