"""Per-layer kernels: the kernel as a sum over parameter groups.

A kernel is a sum over parameters, ``Θ(x, x') = Σ_p ∂f(x)/∂θ_p ∂f(x')/∂θ_pᵀ``, so grouping the parameters by
the module that owns them (its path, e.g. ``"encoder.layer.0.attention.self.query"``) splits it into parts
``Θ_l`` with ``Σ_l Θ_l = Θ``. The Jacobian and structured engines compute the parts from the blocks they
prepare for the whole kernel anyway (the structured engine's layer terms are per layer already); the
vector-product engine, which never separates parameters, computes each part as the kernel of its group.
"""

from __future__ import annotations

import dataclasses
import sys
from typing import TYPE_CHECKING

import torch
from torch import Tensor
from tqdm.auto import tqdm

from .inputs import Inputs
from .model import FunctionalModel
from .selection import group_of

if TYPE_CHECKING:
    from ..planning import Plan


def restricted(fm: FunctionalModel, names: list[str]) -> FunctionalModel:
    """``fm`` differentiating only the parameters ``names``; the others are held fixed."""
    return dataclasses.replace(
        fm,
        params={n: fm.params[n] for n in names},
        constants={**fm.constants, **{n: p for n, p in fm.params.items() if n not in names}},
    )


def groups(fm: FunctionalModel) -> dict[str, list[str]]:
    """The parameter groups of ``fm``: module path → the names of its differentiated parameters."""
    out: dict[str, list[str]] = {}
    for name in fm.params:
        out.setdefault(group_of(name), []).append(name)
    return out


def tiled_parts(plan: Plan, fm: FunctionalModel, X1: Inputs, X2: Inputs, *, progress: bool | None) -> dict[str, Tensor]:
    """The kernel's part from each parameter group, tile by tile (as ``kernel()`` runs ``plan``).

    Returns:
        ``{module path: kernel}``, each ``[N1, N2, O, O]`` or ``[N1, N2]``, in the model's parameter order;
        they sum to the whole kernel.
    """
    from ..planning import engine_of
    from .api import _tiled, transpose_tile

    eng, kind, symmetric = engine_of(plan), plan.kind, plan.symmetric
    if not hasattr(eng, "contract_parts"):
        return {g: _tiled(plan, restricted(fm, names), X1, X2, progress=progress) for g, names in groups(fm).items()}
    N1, N2, O = len(X1), len(X2), fm.num_outputs
    shape = (N1, N2, O, O) if kind.is_matrix_valued else (N1, N2)
    out = {g: torch.empty(shape, device=fm.device, dtype=fm.dtype) for g in groups(fm)}
    if progress is None:
        progress = len(plan.tiles) > 1 and sys.stderr.isatty()
    row, a = None, None
    for t in tqdm(plan.tiles, desc=f"{kind.value} tiles by layer", unit="tile", disable=not progress):
        if t.rows != row:
            row, a = t.rows, eng.prepare(fm, X1[t.rows], kind)
        same = symmetric and t.on_diagonal
        b = a if same else eng.prepare(fm, X2[t.cols], kind)
        parts = eng.contract_parts(fm, a, b, kind, same=same)
        for g, K in out.items():
            tile = parts[g].detach() if g in parts else torch.zeros_like(K[t.rows, t.cols])
            if same:
                tile = (tile + transpose_tile(tile).contiguous()) / 2
            K[t.rows, t.cols] = tile
            if symmetric and not t.on_diagonal:
                K[t.cols, t.rows] = transpose_tile(tile).contiguous()
    return out
