"""Block randomly pivoted Cholesky: a low-rank factor ``K ≈ F Fᵀ`` of a kernel from a few of its columns.

Pivots are drawn ``block`` at a time with probability proportional to the diagonal of the residual
``K − F Fᵀ`` (block RPCholesky, Chen, Epperly, Tropp & Webber 2024), so a sample that the columns read so far
explain badly is likely to be read next. ``F Fᵀ = K(:, S) K(S, S)⁺ K(S, :)`` is the Nyström approximation with
the pivots ``S`` as landmarks, up to the directions a block drops as numerically dependent. Its expected trace
error is within ``1 + ε`` of the best rank-``r`` one, ``tr(K − ⟦K⟧_r)``, once about ``r/ε + r log(1/(εη))``
columns are read (``η`` the fraction of the trace beyond the ``r``-th eigenvalue), whatever the coherence of
``K`` — uniformly drawn columns need a number that grows with it.

The preconditioner :func:`pntk.solvers.pivoted_cholesky` and the Nyström landmarks of
:func:`pntk.features.rpcholesky_landmarks` both use it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from .operand import as_operator


@dataclass(frozen=True)
class PivotedCholesky:
    """``K ≈ F Fᵀ`` and the pivots it read.

    Attributes:
        F: ``[n, r]`` on the operator's device: float64, or float32 for a kernel of lower precision.
        pivots: ``[p]`` the columns read, distinct, in the order drawn (``p ≥ r``: a block adds fewer
            directions than it reads columns when some of them are numerically dependent on the others).
        residual: ``[n]`` float64, the diagonal of ``K − F Fᵀ`` (clamped at zero).
    """

    F: Tensor
    pivots: Tensor
    residual: Tensor


def rpcholesky(op: Any, rank: int, *, block: int = 32, seed: int = 0) -> PivotedCholesky:
    """Randomly pivoted Cholesky of a symmetric positive semi-definite kernel, ``rank`` directions.

    Args:
        op: the ``[n, n]`` kernel (tensor, array, operator or store) with its exact diagonal; columns come from
            ``op.columns``, which a kernel operator contracts from its factors (a dense layer costs
            ``n·s·(n_in + m_out)`` per block of ``s`` columns).
        rank: the directions wanted, at most ``n``; fewer when the residual falls to the rounding level of the
            columns (``10·ε·max K(x, x)`` per pivot of a block) first. Past the numerical rank of ``K`` a block
            can still add a direction just above that level: it changes ``F Fᵀ`` by rounding only.
        block: pivots drawn per block of columns.
        seed: the seed of the pivot draws.

    Returns:
        The factor, the pivots and the residual diagonal. Cost: about ``rank`` columns of ``op`` in blocks of
        ``block``, ``O(n · rank²)`` flops; memory ``n × rank`` numbers in the kernel's precision (at least
        float32).
    """
    op = as_operator(op, "op")
    n = op.shape[0]
    d = op.diagonal().to(torch.float64).clone()
    # A column's rounding error is about ε·max K(x, x): a residual direction below that is noise.
    noise = 10 * torch.finfo(op.dtype).eps * float(d.max().clamp(min=0)) if n else 0.0
    g = torch.Generator(device="cpu").manual_seed(seed)
    # F in the kernel's precision, at least float32: a float32 kernel's columns are float32 numbers already
    # (see the note [A preconditioner in float32] in preconditioners.py); what resolves small residuals, the
    # residual diagonal and each block's eigendecomposition, is float64.
    dtype = torch.float64 if op.dtype == torch.float64 else torch.float32
    F = torch.zeros(n, min(rank, n), dtype=dtype, device=op.device)
    pivots = []
    r = 0
    while r < F.shape[1] and d.sum() > 0:
        s = min(block, F.shape[1] - r, int((d > 0).sum()))
        S = torch.multinomial(d.clamp(min=0).cpu(), s, replacement=False, generator=g).to(op.device)
        pivots.append(S)
        G = op.columns(S).to(dtype) - F[:, :r] @ F[S, :r].T
        H = G[S].to(torch.float64)
        w, V = torch.linalg.eigh((H + H.T) / 2)
        keep = w > s * max(float(w.max()) * 10 * torch.finfo(op.dtype).eps, noise)
        if not keep.any():
            break
        new = G @ (V[:, keep] / w[keep].sqrt()).to(dtype)
        F[:, r : r + new.shape[1]] = new
        d = (d - new.to(torch.float64).square().sum(1)).clamp(min=0)
        d[S] = 0  # exactly what remains at a pivot; a pivot is never drawn twice
        r += new.shape[1]
    index = torch.cat(pivots) if pivots else torch.zeros(0, dtype=torch.long, device=op.device)
    return PivotedCholesky(F[:, :r], index, d)
