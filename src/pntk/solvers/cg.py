"""Preconditioned conjugate gradients for ``(K + λI) W = Y``, all columns of ``Y`` sharing each product, and
mixed-precision iterative refinement around them (fast float32 products, residuals from a float64 operator)."""

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
from ..operators.base import LinearOperator
from .operand import as_float64, as_operator, product
from .options import ConvergenceWarning, Preconditioner, SolverOptions
from .preconditioners import kronecker, nystrom, pivoted_cholesky


@dataclass(frozen=True)
class CGResult:
    """The solution of ``(K + λI) W = Y`` and how it was reached.

    Attributes:
        solution: ``W`` ``[n, c]`` float64.
        iterations: iterations run (one product with the unconverged columns each).
        residual: ``[c]`` the true relative residuals ``‖Y − (K + λI) W‖ / ‖Y‖``, from one more product.
        history: ``[iterations + 1]`` the largest relative residual of the recurrence at each iteration.
        converged: every column's true residual (from products in the operator's dtype) reached ``tol``. When
            the recurrence reaches ``tol`` but the true residual does not (the rounding of float32 products makes
            them drift apart), the solve restarts from the true residual while that lowers it.
        products: columns of ``K`` multiplied (or read, for a preconditioner) in all, products with ``exact``
            included.
        refinements: outer steps of iterative refinement with ``exact``, or restarts from the true residual
            without it.
        rounding_limited: not converged before ``maxiter``: the rounding of the products, not the iteration
            cap, stopped the solve above ``tol``.
    """

    solution: Tensor
    iterations: int
    residual: Tensor
    history: Tensor
    converged: bool
    products: int
    refinements: int = 0
    rounding_limited: bool = False


#: The relative accuracy each inner solve of iterative refinement asks for: an outer step gains up to four
#: digits, as many as float32 products carry after the cancellations of a ridge system.
INNER_TOL = 1e-4
#: Outer steps of iterative refinement before it gives up.
MAX_REFINEMENTS = 8


def pcg(
    K: Any,
    Y: Any,
    *,
    ridge: float = 0.0,
    x0: Any | None = None,
    options: SolverOptions | None = None,
    preconditioner: Callable[[Tensor], Tensor] | None = None,
    exact: Any | None = None,
) -> CGResult:
    r"""Solve :math:`(K + λI)\,W = Y` by preconditioned conjugate gradients, matrix-free.

    The columns of ``Y`` run as independent recurrences whose products share one pass (a block product with
    the columns not converged yet); a column stops when its recurrence residual reaches ``tol``. The result
    reports the true residual of every column (one more product); where it is still above ``tol`` the solve
    restarts from it, and a :class:`ConvergenceWarning` says when ``maxiter`` iterations or the products'
    rounding leave a column above ``tol``.

    The preconditioner (``options.preconditioner``, of rank ``options.rank``) is built from the operator:
    pivoted Cholesky reads ``rank`` columns in blocks, Nyström (which stands in for an operator without an
    exact diagonal) costs one product with ``rank`` columns, and for an eNTK operator the Kronecker
    preconditioner factors its trace NTK (``"auto"``, the default, takes it there and pivoted Cholesky
    elsewhere); all need ``λ > 0``. Pass
    ``preconditioner`` (a callable ``R ↦ P⁻¹R``, e.g. one built earlier) to reuse one.

    With ``exact`` (the same kernel with products in a higher precision, e.g. ``pntk.operator(..., dtype=
    torch.float64)`` beside a float32 ``K``) the solve is mixed-precision iterative refinement: the residual
    ``Y − (K_exact + λI) W`` is taken with ``exact``, and the correction for it is solved with ``K`` to a
    relative accuracy of :data:`INNER_TOL`, until the residual with ``exact`` reaches ``tol``. The solution
    is then the one of ``exact``'s matrix, not of the rounding of ``K``'s products (which stalls a float32
    solve near ``1e-5``–``1e-4``); each outer step costs one product with ``exact``.

    Args:
        K: ``[n, n]`` symmetric positive semi-definite: tensor, array, pntk operator or kernel store.
        Y: ``[n, c]`` or ``[n]`` right-hand sides.
        ridge: ``λ ≥ 0``.
        x0: ``[n, c]`` warm start (e.g. the solution for a nearby ridge); default zeros.
        options: ``tol``, ``maxiter`` (default 1000), ``preconditioner``, ``rank``, ``seed``,
            ``progress``.
        preconditioner: a ready ``P⁻¹``, overriding ``options.preconditioner``.
        exact: ``[n, n]``, the same kernel in a higher precision, for iterative refinement; default none.

    Returns:
        :class:`CGResult` (``solution`` ``[n, c]``, or ``[n]`` for ``Y`` ``[n]``).

    Raises:
        ValueError: shapes that disagree, a negative ridge, or a preconditioner with ``ridge = 0``.

    Example:
        >>> import torch
        >>> K = torch.tensor([[2.0, 1.0], [1.0, 2.0]], dtype=torch.float64)
        >>> r = pcg(K.float(), torch.tensor([4.0, 4.0]), ridge=1.0, exact=K, options=SolverOptions(tol=1e-12))
        >>> r.converged, r.refinements >= 1, bool(r.residual.max() <= 1e-12)
        (True, True, True)
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
    if kind is Preconditioner.AUTO:
        kind = Preconditioner.KRONECKER if _is_entk_operator(op) else Preconditioner.PIVOTED_CHOLESKY
    if M is None and kind is not Preconditioner.NONE:
        if ridge <= 0:
            raise ValueError(
                f"the {kind.value} preconditioner needs ridge > 0 (it inverts K + λI); pass a ridge or "
                "preconditioner='none'"
            )
        if kind is Preconditioner.KRONECKER:
            K_scalar = _scalar_kernel(op)
            O = op.shape[0] // K_scalar.shape[0]
            M = kronecker(K_scalar, O, ridge, rank=options.rank, seed=options.seed)
        elif kind is Preconditioner.PIVOTED_CHOLESKY and _has_diagonal(op):
            M = pivoted_cholesky(op, options.rank, ridge, seed=options.seed)
        else:
            M = nystrom(op, options.rank, ridge, seed=options.seed)
        products += M.products

    def A(P: Tensor) -> Tensor:
        return product(op, P) + ridge * P

    maxiter = options.maxiter or 1000
    X = torch.zeros_like(B) if x0 is None else as_float64(x0, op.device).reshape(n, -1).clone()
    norms = B.norm(dim=0)
    safe = norms.clamp(min=torch.finfo(torch.float64).tiny)
    show = options.progress if options.progress is not None else sys.stderr.isatty()
    with tqdm(total=maxiter, desc="conjugate gradients", unit="it", disable=not show, leave=False) as bar:
        if exact is None:
            R = B - A(X) if x0 is not None else B.clone()
            products += B.shape[1] if x0 is not None else 0
            run = _cg(A, X, R, safe, options.tol * safe, M, maxiter, bar)
            iterations, history, refinements = run.iterations, run.history, 0
            products += run.products
            R_true = B - A(X)
            true = R_true.norm(dim=0) / safe
            products += B.shape[1]
            if not run.active.any() and bool((true > options.tol).any()):
                # The recurrence's residual drifted from the true one (rounding of the products): restart from
                # the true residual, as refinement with the same operator, while that still lowers it.
                X, true, more, tail, refinements, used = _refine(
                    A, A, B, X, safe, options.tol, M, maxiter - iterations, bar, R=R_true
                )
                iterations, products = iterations + more, products + used
                history.extend(tail[1:])
            converged = bool((true <= options.tol).all())
        else:
            X, true, iterations, history, refinements, used = _refine(
                A, _exact(exact, op, ridge), B, X, safe, options.tol, M, maxiter, bar
            )
            products += used
            converged = bool((true <= options.tol).all())
    rounding_limited = not converged and iterations < maxiter
    if not converged:
        if rounding_limited:
            advice = (
                f"the rounding of the kernel's {str(op.dtype).removeprefix('torch.')} products stops it there; pass "
                "exact= (the same kernel with float64 products) to pcg or ridge_regression for iterative "
                "refinement, compute the kernel in float64, or loosen tol"
            )
        else:
            advice = "raise maxiter, add a ridge, or raise the preconditioner's rank"
        warnings.warn(
            f"conjugate gradients did not reach tol = {options.tol:g} in {iterations} iterations: the largest "
            f"relative residual is {true.max().item():.3g}; {advice}",
            ConvergenceWarning,
            stacklevel=2,
        )
    solution = X[:, 0] if squeeze else X
    return CGResult(
        solution,
        iterations,
        true,
        torch.tensor(history, dtype=torch.float64),
        converged,
        products,
        refinements,
        rounding_limited,
    )


@dataclass
class _Run:
    """What one run of the recurrence did: its iterations, the residual norms it recorded (relative to
    ``‖Y‖``), the columns it left unconverged and the columns it multiplied."""

    iterations: int
    history: list[float]
    active: Tensor
    products: int


def _cg(
    A: Callable[[Tensor], Tensor],
    X: Tensor,
    R: Tensor,
    scale: Tensor,
    stop: Tensor,
    M: Callable[[Tensor], Tensor] | None,
    maxiter: int,
    bar: Any,
) -> _Run:
    """Preconditioned CG from ``X`` (updated in place) with residual ``R = B − A X`` (updated in place): a
    column stops when ``‖R_c‖ ≤ stop_c``; ``‖R_c‖ / scale_c`` is what the history and the bar show."""
    active = R.norm(dim=0) > stop
    Z = M(R) if M is not None else R
    P = Z.clone()
    rz = (R * Z).sum(0)
    history = [(R.norm(dim=0) / scale).max().item()]
    iterations = products = 0
    while active.any() and iterations < maxiter:
        iterations += 1
        cols = active.nonzero().squeeze(1)
        AP = A(P[:, cols])
        products += len(cols)
        alpha = rz[cols] / (P[:, cols] * AP).sum(0)
        X[:, cols] += alpha * P[:, cols]
        R[:, cols] -= alpha * AP
        norms = R.norm(dim=0)
        history.append((norms[cols] / scale[cols]).max().item())
        active[cols] = norms[cols] > stop[cols]
        Zc = M(R[:, cols]) if M is not None else R[:, cols]
        rz_new = (R[:, cols] * Zc).sum(0)
        P[:, cols] = Zc + (rz_new / rz[cols]) * P[:, cols]
        rz[cols] = rz_new
        bar.update(1)
        bar.set_postfix(residual=f"{history[-1]:.2e}")
    return _Run(iterations, history, active, products)


def _has_diagonal(op: Any) -> bool:
    """Whether ``op`` gives its exact diagonal (pivoted Cholesky needs it; Nyström stands in otherwise)."""
    return type(op).diagonal is not LinearOperator.diagonal


def _is_entk_operator(op: Any) -> bool:
    from ..kernels.kinds import Kind
    from ..operators.kernel import KernelOperator

    return isinstance(op, KernelOperator) and op.kind is Kind.ENTK


def _scalar_kernel(op: Any) -> Any:
    """The trace NTK operator beside an eNTK operator, for the Kronecker preconditioner (the note [Which K for
    Θ ≈ K ⊗ I]).

    Raises:
        ValueError: ``op`` is not a pntk eNTK operator.
    """
    from ..kernels.kinds import Kind

    if not _is_entk_operator(op):
        raise ValueError(
            "preconditioner='kronecker' needs an eNTK operator (pntk.operator(model, x, kind='entk')), whose "
            "trace NTK it factors; for another eNTK, build one with pntk.solvers.kronecker(K_trace, O, ridge, "
            "rank=...) and pass it as preconditioner="
        )
    return op.with_kind(Kind.TRACE)


def _exact(exact: Any, op: Any, ridge: float) -> Callable[[Tensor], Tensor]:
    """``P ↦ (K_exact + λI) P`` for the refinement's residuals.

    Raises:
        ValueError: ``exact`` has another shape than ``K``.
    """
    ex = as_operator(exact, "exact")
    if ex.shape != op.shape:
        raise ValueError(f"exact must have K's shape {op.shape}; got {ex.shape}")
    return lambda P: product(ex, P) + ridge * P


def _refine(
    A: Callable[[Tensor], Tensor],
    A_exact: Callable[[Tensor], Tensor],
    B: Tensor,
    X: Tensor,
    safe: Tensor,
    tol: float,
    M: Callable[[Tensor], Tensor] | None,
    maxiter: int,
    bar: Any,
    R: Tensor | None = None,
) -> tuple[Tensor, Tensor, int, list[float], int, int]:
    """Iterative refinement: residuals with ``A_exact``, corrections by CG with ``A`` to :data:`INNER_TOL`
    (or to what ``tol`` still asks, if less). Stops at ``tol``, at ``maxiter`` inner iterations in all, after
    :data:`MAX_REFINEMENTS` steps, or when a step no longer lowers the residual. ``R``: the residual
    ``B − A_exact X`` when the caller has it already.

    Returns:
        ``(X, relative residuals [c], inner iterations, history, outer steps, products)``.
    """
    products = 0
    if R is None:
        R = B - A_exact(X)
        products = B.shape[1]
    rel = R.norm(dim=0) / safe
    history = [rel.max().item()]
    iterations = steps = 0
    while bool((rel > tol).any()) and iterations < maxiter and steps < MAX_REFINEMENTS:
        steps += 1
        cols = (rel > tol).nonzero().squeeze(1)
        Rc = R[:, cols].clone()
        scale = safe[cols]
        inner = torch.maximum(torch.full_like(scale, INNER_TOL), tol / rel[cols]) * Rc.norm(dim=0)
        D = torch.zeros_like(Rc)
        run = _cg(A, D, Rc, scale, inner, M, maxiter - iterations, bar)
        iterations += run.iterations
        products += run.products
        history.extend(run.history[1:])
        candidate = X.clone()
        candidate[:, cols] += D
        R_new = B - A_exact(candidate)
        products += B.shape[1]
        rel_new = R_new.norm(dim=0) / safe
        history.append(rel_new.max().item())
        if not bool((rel_new[cols] < rel[cols]).any()):
            break  # the corrections no longer help: the inner products' rounding is reached
        better = rel_new < rel
        X[:, better], R[:, better], rel[better] = candidate[:, better], R_new[:, better], rel_new[better]
    return X, rel, iterations, history, steps, products
