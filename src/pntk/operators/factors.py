"""Products with a network's Jacobian from the structured engine's per-layer factors, never forming it.

A prepared block of ``B`` samples (:class:`pntk.kernels.structured.engine.Block`) holds, per factored layer,
the inputs ``A [G, B, T, n]`` and cotangents ``D [G, B, R, T, m]`` with ``∂g_r/∂W_g = ws Σ_t D_{g,r,t}ᵀ A_{g,t}``
and ``∂g_r/∂b = bs Σ_t D_{r,t}``, and the per-sample gradients ``J [B, R, P_part]`` of everything else. Here
``g_r`` is the summed output ``O^{-1/2} Σ_a f_a`` (``R = 1``, the pNTK) or each output ``f_a`` (``R = O``).

With ``W [B, R, k]`` (``k`` columns), the two halves of a kernel product are

.. math::

    \\text{pull}: U_j = \\sum_{n,r} W_{nrj} \\, ∇_θ g_r(x_n), \\qquad
    \\text{push}: (J U)_{nrj} = ∇_θ g_r(x_n) \\cdot U_j,

and per factored dense layer ``U_j = ws Σ_{n,t} E_{ntj}ᵀ A_{nt}`` with ``E_{ntj} = Σ_r W_{nrj} D_{nrt}``, then
``(J U)_{nrj} = Σ_t ⟨D_{nrt}, ws U_j A_{nt} + bs u_j⟩``: two matmuls of ``B·T·k·n·m`` multiply-adds each.
An embedding scatters and gathers rows instead; a rule whose factors this module does not know is
materialised as per-sample gradients by the rule itself (exact, costlier).
"""

from __future__ import annotations

import torch
from torch import Tensor

from ..kernels.structured.engine import Block, Factors
from ..kernels.structured.rules import EmbeddingRule, Rule, scales


def _dense(f: Factors) -> bool:
    """Whether the layer's Gram is the default ``ws² A Aᵀ + bs²`` of a dense input factor."""
    return type(f.layer.rule).gram is Rule.gram


def _materialised(f: Factors) -> Tensor:
    """The per-sample gradient of a factored layer ``[B, R, P_layer]``, by its rule."""
    layer = f.layer
    parts = layer.rule.gradient(layer.module, f.A, f.D, weight=True, bias=layer.bias is not None)
    return torch.cat(parts, -1)


def pull(block: Block, W: Tensor) -> list[Tensor]:
    """``U = Jᵀ W`` in parameter space, in parts (see the module docstring).

    Args:
        block: the prepared block.
        W: ``[B, R, k]``.

    Returns:
        One tensor per part, each with the ``k`` columns on its leading axis.
    """
    U: list[Tensor] = []
    for f in block.factors:
        layer, module = f.layer, f.layer.module
        G, B, R, T, m = f.D.shape
        k = W.shape[-1]
        if isinstance(layer.rule, EmbeddingRule):
            E = torch.einsum("brk,gbrtm->btkm", W, f.D).reshape(B * T, k * m)
            ids = f.A.reshape(-1)
            valid = ids >= 0
            UW = E.new_zeros(f.layer.shape.n, k * m)  # n: the vocabulary
            UW.index_add_(0, ids[valid], E[valid])
            U.append(UW)
        elif _dense(f):
            ws, bs = scales(module)
            E = torch.einsum("brk,gbrtm->gbtkm", W, f.D).reshape(G, B * T, k * m)
            UW = torch.bmm(E.mT, f.A.reshape(G, B * T, -1))  # [G, k·m, n]
            U.append(UW.mul_(ws) if ws != 1 else UW)
            if layer.bias is not None:
                U.append(E.sum(1).mul_(bs))  # [G, k·m]
        else:
            U.append(torch.einsum("brk,brp->kp", W, _materialised(f)))
    for J in block.J:
        U.append(torch.einsum("brk,brp->kp", W, J))
    return U


def push(block: Block, U: list[Tensor], k: int) -> Tensor:
    """``J U`` for the parts ``U`` of :func:`pull` with ``k`` columns: ``[B, R, k]``."""
    out = None
    parts = iter(U)
    for f in block.factors:
        layer, module = f.layer, f.layer.module
        G, B, R, T, m = f.D.shape
        if isinstance(layer.rule, EmbeddingRule):
            UW = next(parts)
            ids = f.A.reshape(-1)
            H = UW[ids.clamp(min=0)] * (ids >= 0).unsqueeze(1).to(UW.dtype)
            term = torch.einsum("gbrtm,btkm->brk", f.D, H.view(B, T, k, m))
        elif _dense(f):
            ws, bs = scales(module)
            UW = next(parts)
            H = torch.bmm(f.A.reshape(G, B * T, -1), UW.mT)  # [G, B·T, k·m]
            if ws != 1:
                H.mul_(ws)
            if layer.bias is not None:
                H.add_(next(parts).unsqueeze(1), alpha=bs)
            term = torch.einsum("gbrtm,gbtkm->brk", f.D, H.view(G, B, T, k, m))
        else:
            term = torch.einsum("brp,kp->brk", _materialised(f), next(parts))
        out = term if out is None else out.add_(term)
    for J in block.J:
        term = torch.einsum("brp,kp->brk", J, next(parts))
        out = term if out is None else out.add_(term)
    if out is None:
        raise RuntimeError("the prepared block holds no factor and no gradient: the model has no parameter here")
    return out


def squared_norms(block: Block) -> Tensor:
    """``‖∇_θ g_r(x_n)‖²`` for every sample and row: ``[B, R]``, the diagonal of the kernel's blocks."""
    out = None
    for f in block.factors:
        layer, module = f.layer, f.layer.module
        G, B, R, T, m = f.D.shape
        GD = torch.einsum("gbrtm,gbrum->gbrtu", f.D, f.D)
        if isinstance(layer.rule, EmbeddingRule):
            ids = f.A.reshape(1, B, T)
            GA = ((ids.unsqueeze(-1) == ids.unsqueeze(-2)) & (ids >= 0).unsqueeze(-1)).to(f.D.dtype)
            term = torch.einsum("gbtu,gbrtu->br", GA, GD)
        elif _dense(f):
            ws, bs = scales(module)
            GA = torch.einsum("gbtn,gbun->gbtu", f.A, f.A) * ws**2
            if layer.bias is not None:
                GA += bs**2
            term = torch.einsum("gbtu,gbrtu->br", GA, GD)
        else:
            term = _materialised(f).square().sum(-1)
        out = term if out is None else out + term
    for J in block.J:
        term = J.square().sum(-1)
        out = term if out is None else out + term
    if out is None:
        raise RuntimeError("the prepared block holds no factor and no gradient: the model has no parameter here")
    return out
