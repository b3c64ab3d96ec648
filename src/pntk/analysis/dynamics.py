"""Gradient flow of the linearised network on the squared loss, in closed form."""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import torch

from pntk.analysis import _operators
from pntk.analysis._linalg import ArrayLike, cutoff_for, eigh_in_place, kernel_precision, kernel_system, null_mask
from pntk.analysis._operators import is_matrix_free

__all__ = ["GradientFlowPredictions", "gradient_flow"]


class GradientFlowPredictions(NamedTuple):
    """Outputs of the linearised network along gradient flow.

    Attributes:
        train: ``[*t.shape, N, O]`` predictions on the train inputs.
        test: ``[*t.shape, M, O]`` predictions on the test inputs, or ``None`` without a test kernel.
    """

    train: np.ndarray
    test: np.ndarray | None


def gradient_flow(
    K_train_train: ArrayLike,
    K_test_train: ArrayLike | None,
    Y_train: ArrayLike,
    t: float | ArrayLike,
    *,
    learning_rate: float = 1.0,
    f0_train: ArrayLike | None = None,
    f0_test: ArrayLike | None = None,
    rtol: float | None = None,
    overwrite_kernel: bool = False,
    kernel_dtype: torch.dtype | str | None = None,
) -> GradientFlowPredictions:
    r"""Predictions of the linearised network trained by gradient flow for time ``t``.

    Gradient flow on :math:`L = \tfrac12 \sum_i \|f(x_i) - y_i\|^2` with rate :math:`\eta` and a constant
    kernel :math:`\Theta` has the solution

    .. math::

        f_t(X) &= Y + e^{-\eta \Theta t}\,(f_0(X) - Y), \\
        f_t(x) &= f_0(x) + \Theta(x, X)\,\Theta^{-1}\bigl(I - e^{-\eta \Theta t}\bigr)\,(Y - f_0(X)),

    with :math:`\Theta = \Theta(X, X)`. With a scalar kernel ``K`` (pNTK, trace NTK) the formulas apply to
    each output column, i.e. :math:`\Theta = K \otimes I`; with the eNTK they act on ``Y`` flattened, row
    ``n·O + a``.

    One eigendecomposition :math:`\Theta = V \operatorname{diag}(\lambda) V^\top` serves every ``t``:
    :math:`\Theta^{-1}(I - e^{-\eta\Theta t}) = V \operatorname{diag}(\varphi_t(\lambda)) V^\top` with
    :math:`\varphi_t(\lambda) = -\operatorname{expm1}(-\eta\lambda t)/\lambda`, evaluated without
    cancellation, and its limit :math:`\varphi_t(0) = \eta t` on the null space. Eigenvalues with
    :math:`|\lambda| \le` ``rtol`` :math:`\cdot \max|\lambda|` are rounding noise around zero (a kernel is
    positive semi-definite) and are set to zero: those modes do not move on the train set, and on the test
    set they add :math:`\eta t\,\Theta(x, X) v v^\top (Y - f_0(X))`, which vanishes for a Gram kernel whose
    test rows lie in the span of its train rows. ``t = inf`` gives the limit with the null modes dropped:
    the minimum-norm interpolant, equal to :func:`pntk.analysis.kernel_regression`'s result.

    Cost: one symmetric eigendecomposition (``~9 n³`` flops with ``n = N`` or ``N·O``), then
    ``n²·O`` per time on the train set and ``M·N·O`` (``M·O·N·O`` for the eNTK) per time on the test set.
    Memory: the kernel copy and its eigenvectors, ``2 n²`` float64.

    Args:
        K_train_train: ``[N, N]`` scalar kernel, ``[N, N, O, O]`` eNTK, or the eNTK matrix ``[N·O, N·O]``.
            Symmetric; only one triangle is read.
        K_test_train: ``[M, N]`` (scalar) or ``[M, N, O, O]`` / ``[M·O, N·O]`` (eNTK); ``None`` to predict
            on the train set only.
            A pntk operator or :class:`pntk.KernelStore` for either runs Lanczos on ``exp(−ηtK)`` instead
            (:func:`pntk.solvers.gradient_flow`: finite ``t`` only, ``rtol`` unused).
        Y_train: ``[N, O]`` targets, or ``[N]`` for one output.
        t: time, a scalar or an array of any shape, ``≥ 0``; ``inf`` allowed.
        learning_rate: ``η > 0``.
        f0_train: ``[N, O]`` network outputs at initialisation on the train inputs; ``None`` for 0.
        f0_test: ``[M, O]`` the same on the test inputs; ``None`` for 0.
        rtol: relative eigenvalue cutoff; ``None`` for ``n · ε₆₄`` and, for a kernel computed in float32 or
            lower, at least its rounding noise (as in :func:`pntk.analysis.kernel_regression`).
        overwrite_kernel: let the eigendecomposition destroy ``K_train_train`` instead of copying it, when it
            is a contiguous float64 NumPy array or CPU tensor.
        kernel_dtype: the dtype the kernel was computed in; ``None`` for the dtype it carries.

    Returns:
        :class:`GradientFlowPredictions` ``(train [*t.shape, N, O], test [*t.shape, M, O] or None)``,
        float64 (without the ``O`` axis if ``Y_train`` is ``[N]``).

    Raises:
        ValueError: on inconsistent shapes, negative times or a non-positive learning rate.

    Example:
        >>> import numpy as np
        >>> K = np.array([[2.0, 1.0], [1.0, 2.0]])
        >>> Y = np.array([[1.0], [-1.0]])
        >>> flow = gradient_flow(K, K, Y, [0.0, 1.0, np.inf])
        >>> flow.train.shape, flow.test.shape
        ((3, 2, 1), (3, 2, 1))
        >>> np.allclose(flow.train[0], 0.0), np.allclose(flow.train[-1], Y)
        (True, True)
        >>> np.allclose(flow.train[1], (1 - np.exp(-1.0)) * Y)  # Y is an eigenvector of K with eigenvalue 1
        True
    """
    if is_matrix_free(K_train_train, K_test_train):
        return _operators.gradient_flow(
            K_train_train, K_test_train, Y_train, t, learning_rate=learning_rate, f0_train=f0_train, f0_test=f0_test
        )
    times = np.asarray(t, dtype=np.float64)
    if np.isnan(times).any() or (times < 0).any():
        raise ValueError(f"times must be non-negative; got {t}")
    if not learning_rate > 0:
        raise ValueError(f"learning_rate must be positive; got {learning_rate}")
    precision = kernel_precision(K_train_train, kernel_dtype)
    A, system = kernel_system(K_train_train, Y_train, f0_train, overwrite=overwrite_kernel)
    n = A.shape[0]
    cutoff = cutoff_for(A, n, rtol, precision)
    lam, V = eigh_in_place(A)
    del A  # destroyed by the eigendecomposition
    lam[null_mask(lam, cutoff)] = 0.0
    C = V.T @ system.R  # [n, cols]: the residual Y − f0(X) in the eigenbasis

    eta_t = learning_rate * times.reshape(-1, 1)  # [T, 1]
    positive = lam > 0
    with np.errstate(invalid="ignore"):  # η·0·inf on null modes at t = inf, discarded by np.where
        growth = np.where(positive, -np.expm1(-eta_t * lam), 0.0)  # [T, n]: eigenvalues of I − e^{−ηΘt}
    phi = np.where(positive, growth / np.where(positive, lam, 1.0), np.where(np.isinf(eta_t), 0.0, eta_t))

    def in_input_space(coefficient: np.ndarray) -> np.ndarray:
        """``V (coefficient_t ∘ C)`` for every time ``t``: ``[T, n]`` → ``[n, T, cols]``."""
        T = coefficient.shape[0]
        return (V @ (coefficient.T[:, :, None] * C[:, None, :]).reshape(n, -1)).reshape(n, T, -1)

    # f_t(X) = f0(X) + (I − e^{−ηΘt})(Y − f0(X)): exactly f0(X) at t = 0.
    train = system.outputs(in_input_space(growth), f0_train, "f0_train")
    test = None
    if K_test_train is not None:
        F = system.test_matrix(K_test_train) @ in_input_space(phi).reshape(n, -1)
        test = system.outputs(F.reshape(F.shape[0], len(phi), -1), f0_test, "f0_test")
        test = test.reshape(times.shape + test.shape[1:])
    return GradientFlowPredictions(train.reshape(times.shape + train.shape[1:]), test)
