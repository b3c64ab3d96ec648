"""Independent Lanczos tridiagonalisations of several start vectors, sharing each product.

Column ``c`` of ``R`` starts its own Krylov space ``span{r_c, K r_c, K² r_c, …}``: with ``q_1 = r_c/‖r_c‖``
the recurrence ``β_j q_{j+1} = K q_j − α_j q_j − β_{j−1} q_{j−1}`` gives an orthonormal basis ``Q_m`` and a
tridiagonal ``T_m = Q_mᵀ K Q_m``, and ``f(K) r_c ≈ ‖r_c‖ Q_m f(T_m) e_1`` (exact once the space is invariant).
Each new vector is reorthogonalised against the whole basis (twice), which keeps ``T_m`` free of the ghost
eigenvalues of plain Lanczos. A column whose ``β`` vanishes has found an invariant subspace; it continues
with zeros, which decouple from its ``T``.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor
from tqdm.auto import tqdm

from ..operators.base import LinearOperator
from .operand import product


@dataclass(frozen=True)
class Tridiagonal:
    """The Lanczos decomposition of ``c`` start vectors after ``m`` steps.

    Attributes:
        alpha: ``[c, m]`` diagonals of ``T``.
        beta: ``[c, m]`` ``β_1 … β_m``: off-diagonals of ``T`` (the first ``m − 1``) and the norm of the
            next residual (the last; the error estimates use it).
        norms: ``[c]`` ``‖r_c‖``.
        basis: ``[m, n, c]`` ``Q`` (``q_j`` of every column at step ``j``).
    """

    alpha: Tensor
    beta: Tensor
    norms: Tensor
    basis: Tensor

    @property
    def T(self) -> Tensor:  # noqa: N802 - the maths' name
        """``[c, m, m]`` the tridiagonal matrices."""
        m = self.alpha.shape[1]
        T = torch.diag_embed(self.alpha)
        off = self.beta[:, : m - 1]
        return T + torch.diag_embed(off, 1) + torch.diag_embed(off, -1)


def lanczos(
    op: LinearOperator,
    R: Tensor,
    max_steps: int,
    *,
    stop: Callable[[Tridiagonal], bool] | None = None,
    check_every: int = 5,
    progress: bool | None = None,
) -> Tridiagonal:
    """Run the Lanczos recurrence from every column of ``R [n, c]`` for up to ``max_steps`` steps.

    Args:
        op: the symmetric ``[n, n]`` operator.
        R: ``[n, c]`` float64 start vectors (zero columns stay zero).
        max_steps: the most steps (at most ``n``).
        stop: called every ``check_every`` steps with the decomposition so far; ``True`` ends the run.
        progress: a progress bar over the steps.

    Returns:
        The :class:`Tridiagonal` after the steps taken. Cost: one product with ``c`` columns per step;
        ``O(n · c · m)`` flops of reorthogonalisation per step.
    """
    n, c = R.shape
    m_max = min(max_steps, n)
    norms = R.norm(dim=0)
    q = R / norms.clamp(min=torch.finfo(torch.float64).tiny)
    basis = torch.zeros(m_max, n, c, dtype=torch.float64, device=R.device)
    alpha = torch.zeros(c, m_max, dtype=torch.float64, device=R.device)
    beta = torch.zeros(c, m_max, dtype=torch.float64, device=R.device)
    show = progress if progress is not None else sys.stderr.isatty()
    scale = torch.zeros(c, dtype=torch.float64, device=R.device)
    m = 0
    for j in tqdm(range(m_max), desc="Lanczos steps", unit="step", disable=not show, leave=False):
        basis[j] = q
        w = product(op, q)
        alpha[:, j] = (q * w).sum(0)
        w = w - alpha[:, j] * q - (beta[:, j - 1] * basis[j - 1] if j else 0)
        for _ in range(2):  # full reorthogonalisation against q_1 … q_j of each column
            w = w - torch.einsum("jnc,jc->nc", basis[: j + 1], torch.einsum("jnc,nc->jc", basis[: j + 1], w))
        b = w.norm(dim=0)
        scale = torch.maximum(scale, alpha[:, j].abs() + b)
        invariant = b <= 1e-12 * scale.clamp(min=torch.finfo(torch.float64).tiny)
        b = torch.where(invariant, torch.zeros_like(b), b)
        beta[:, j] = b
        q = torch.where(invariant, torch.zeros_like(w), w / b.clamp(min=torch.finfo(torch.float64).tiny))
        m = j + 1
        if bool(invariant.all()):
            break
        if (
            stop is not None
            and (m % check_every == 0)
            and stop(Tridiagonal(alpha[:, :m], beta[:, :m], norms, basis[:m]))
        ):
            break
    return Tridiagonal(alpha[:, :m], beta[:, :m], norms, basis[:m])


def apply_function(tri: Tridiagonal, f: Callable[[Tensor], Tensor]) -> tuple[Tensor, Tensor]:
    """``f(K) r_c ≈ ‖r_c‖ Q f(T) e_1`` for every column, and the a-posteriori error estimate of each.

    Args:
        f: maps eigenvalues ``[c, m]`` to ``[..., c, m]`` (leading axes for several functions, e.g. times).

    Returns:
        ``(F [..., n, c], error [..., c])`` with ``error = ‖r_c‖ β_m |(f(T) e_1)_m|``, the size of the next
        Krylov term, which bounds the error of fast-converging functions such as ``exp``.
    """
    theta, S = torch.linalg.eigh(tri.T)  # [c, m], [c, m, m]
    coeff = torch.einsum("cim,...cm,cm->...ci", S, f(theta), S[:, 0, :])  # f(T) e_1: [..., c, m]
    F = torch.einsum("jnc,...cj->...nc", tri.basis, coeff * tri.norms.unsqueeze(-1))
    error = tri.norms * tri.beta[:, -1] * coeff[..., -1].abs()
    return F, error
