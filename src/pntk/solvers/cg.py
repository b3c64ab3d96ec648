"""Preconditioned conjugate gradients for ``(K + λI) W = Y``, all columns of ``Y`` sharing each product."""

from __future__ import annotations

import sys
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor
from tqdm.auto import tqdm

from ..choices import parse_enum
from .operand import as_float64, as_operator, product
from .options import ConvergenceWarning, Preconditioner, SolverOptions
from .preconditioners import nystrom, pivoted_cholesky


@dataclass(frozen=True)
class CGResult:
    """The solution of ``(K + λI) W = Y`` and how it was reached.

    Attributes:
        solution: ``W`` ``[n, c]`` float64.
        iterations: iterations run (one product with the unconverged columns each).
        residual: ``[c]`` the true relative residuals ``‖Y − (K + λI) W‖ / ‖Y‖``, from one more product.
        history: ``[iterations + 1]`` the largest relative residual of the recurrence at each iteration.
        converged: every column's recurrence residual reached ``tol`` (the true residual, from products in the
            operator's dtype, can sit slightly above it: float32 products carry relative errors near ``1e-7``).
        products: columns of ``K`` multiplied (or read, for a preconditioner) in all.
    """

    solution: Tensor
    iterations: int
    residual: Tensor
    history: Tensor
    converged: bool
    products: int


def pcg(
    K: Any,
    Y: Any,
    *,
    ridge: float = 0.0,
    x0: Any | None = None,
    options: SolverOptions | None = None,
    preconditioner: Callable[[Tensor], Tensor] | None = None,
) -> CGResult:
    r"""Solve :math:`(K + λI)\,W = Y` by preconditioned conjugate gradients, matrix-free.

    The columns of ``Y`` run as independent recurrences whose products share one pass (a block product with
    the columns not converged yet); a column stops when its recurrence residual reaches ``tol``. The result
    reports the true residual of every column (one more product) and warns with a
    :class:`ConvergenceWarning` when ``maxiter`` iterations do not reach ``tol``.

    The preconditioner (``options.preconditioner``, of rank ``options.rank``) is built from the operator:
    Nyström costs one product with ``rank`` columns, pivoted Cholesky ``rank`` columns in blocks; both need
    ``λ > 0``. Pass ``preconditioner`` (a callable ``R ↦ P⁻¹R``, e.g. one built earlier) to reuse one.

    Args:
        K: ``[n, n]`` symmetric positive semi-definite: tensor, array, pntk operator or kernel store.
        Y: ``[n, c]`` or ``[n]`` right-hand sides.
        ridge: ``λ ≥ 0``.
        x0: ``[n, c]`` warm start (e.g. the solution for a nearby ridge); default zeros.
        options: ``tol``, ``maxiter`` (default 1000), ``preconditioner``, ``rank``, ``seed``,
            ``progress``.
        preconditioner: a ready ``P⁻¹``, overriding ``options.preconditioner``.

    Returns:
        :class:`CGResult` (``solution`` ``[n, c]``, or ``[n]`` for ``Y`` ``[n]``).

    Raises:
        ValueError: shapes that disagree, a negative ridge, or a preconditioner with ``ridge = 0``.

    Example:
        >>> import torch
        >>> K = torch.tensor([[2.0, 1.0], [1.0, 2.0]], dtype=torch.float64)
        >>> r = pcg(K, torch.tensor([4.0, 4.0], dtype=torch.float64), ridge=1.0)
        >>> [round(w, 8) for w in r.solution.tolist()], r.converged, r.iterations
        ([1.0, 1.0], True, 1)
    """
    options = options or SolverOptions()
    op = as_operator(K, "K")
    n = op.shape[0]
    if op.shape != (n, n):
        raise ValueError(f"K must be square; got shape {op.shape}")
    if ridge < 0:
        raise ValueError(f"ridge must be non-negative; got {ridge}")
    B = as_float64(Y, op.device)
    squeeze = B.dim() == 1
    if B.dim() not in (1, 2) or B.shape[0] != n:
        raise ValueError(f"Y must be [{n}, c] or [{n}]; got shape {list(B.shape)}")
    B = B.reshape(n, -1)
    products = 0
    M = preconditioner
    kind = parse_enum(Preconditioner, options.preconditioner, "preconditioner")
    if M is None and kind is not Preconditioner.NONE:
        if ridge <= 0:
            raise ValueError(
                f"the {kind.value} preconditioner needs ridge > 0 (it inverts K + λI); pass a ridge or "
                "preconditioner='none'"
            )
        build = nystrom if kind is Preconditioner.NYSTROM else pivoted_cholesky
        M = build(op, options.rank, ridge, seed=options.seed)
        products += M.products

    def A(P: Tensor) -> Tensor:
        return product(op, P) + ridge * P

    maxiter = options.maxiter or 1000
    X = torch.zeros_like(B) if x0 is None else as_float64(x0, op.device).reshape(n, -1).clone()
    norms = B.norm(dim=0)
    safe = norms.clamp(min=torch.finfo(torch.float64).tiny)
    R = B - A(X) if x0 is not None else B.clone()
    products += B.shape[1] if x0 is not None else 0
    active = (R.norm(dim=0) / safe > options.tol) & (norms > 0)
    Z = M(R) if M is not None else R
    P = Z.clone()
    rz = (R * Z).sum(0)
    history = [(R.norm(dim=0) / safe).max().item()]
    iterations = 0
    show = options.progress if options.progress is not None else sys.stderr.isatty()
    with tqdm(total=maxiter, desc="conjugate gradients", unit="it", disable=not show, leave=False) as bar:
        while active.any() and iterations < maxiter:
            iterations += 1
            cols = active.nonzero().squeeze(1)
            AP = A(P[:, cols])
            products += len(cols)
            alpha = rz[cols] / (P[:, cols] * AP).sum(0)
            X[:, cols] += alpha * P[:, cols]
            R[:, cols] -= alpha * AP
            rel = R.norm(dim=0) / safe
            history.append(rel[cols].max().item())
            active[cols] = rel[cols] > options.tol
            Zc = M(R[:, cols]) if M is not None else R[:, cols]
            rz_new = (R[:, cols] * Zc).sum(0)
            P[:, cols] = Zc + (rz_new / rz[cols]) * P[:, cols]
            rz[cols] = rz_new
            bar.update(1)
            bar.set_postfix(residual=f"{history[-1]:.2e}")
    true = (B - A(X)).norm(dim=0) / safe
    products += B.shape[1]
    converged = not bool(active.any())
    if not converged:
        warnings.warn(
            f"conjugate gradients did not reach tol = {options.tol:g} in {iterations} iterations: the largest "
            f"relative residual is {true.max().item():.3g}; raise maxiter, add a ridge, or raise the "
            "preconditioner's rank",
            ConvergenceWarning,
            stacklevel=2,
        )
    solution = X[:, 0] if squeeze else X
    return CGResult(solution, iterations, true, torch.tensor(history, dtype=torch.float64), converged, products)
