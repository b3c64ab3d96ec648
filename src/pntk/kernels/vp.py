"""The vector-product engine: NTK-vector products, never holding a Jacobian.

A column of a tile is ``Θ(X1, X2) e = J(X1) (J(X2)ᵀ e)``: a ``vjp`` through the network on ``X2`` turns
the cotangent ``e`` into a parameter-space vector, and a ``jvp`` on ``X1`` along that vector gives the
column. The ``vjp`` closure (one forward pass on ``X2``) is shared by all columns; columns are vectorised in
chunks whose parameter-space vectors fit :data:`CHUNK_BYTES`.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor
from torch.func import jvp, vjp, vmap

from .engine import outputs_per_sample
from .inputs import Inputs
from .kinds import Kind
from .model import FunctionalModel

#: Memory for the parameter-space vectors of one vectorised chunk of columns.
CHUNK_BYTES = 256 * 2**20


class VPEngine:
    """``vjp`` on the column block, ``jvp`` on the row block; memory ``chunk · P`` plus activations."""

    name = "vp"

    def prepare(self, fm: FunctionalModel, x: Inputs, kind: Kind) -> Inputs:
        return x

    def contract(self, fm: FunctionalModel, a: Inputs, b: Inputs, kind: Kind, *, same: bool) -> Tensor:
        B1, B2, O = len(a), len(b), fm.num_outputs
        pullback = vjp(lambda p: fm(p, b), fm.params)[1]

        def column(cotangent: Tensor) -> Tensor:
            (tangent,) = pullback(cotangent)
            return jvp(lambda p: fm(p, a), (fm.params,), (tangent,))[1]  # [B1, O]

        rows = outputs_per_sample(fm, kind)
        # One cotangent per (sample of b, output direction): e_j ⊗ 1/√O for the pNTK, e_j ⊗ e_b otherwise.
        eye = torch.eye(B2 * rows, device=fm.device, dtype=fm.dtype).reshape(B2 * rows, B2, rows)
        cotangents = eye.expand(-1, -1, O) / math.sqrt(O) if kind is Kind.PNTK else eye
        itemsize = fm.dtype.itemsize
        chunk = max(1, CHUNK_BYTES // max(1, fm.num_params * itemsize))
        cols = vmap(column, chunk_size=min(chunk, B2 * rows))(cotangents)  # [B2·rows, B1, O]
        if kind is Kind.PNTK:
            return cols.sum(-1).T / math.sqrt(O)
        theta = cols.reshape(B2, O, B1, O).permute(2, 0, 3, 1)  # [B1, B2, O, O]
        if kind is Kind.ENTK:
            return theta
        return theta.diagonal(dim1=2, dim2=3).sum(-1) / O

    def block_bytes(self, fm: FunctionalModel, n: int, kind: Kind) -> int:
        # A block is only its inputs; a contraction holds at most one chunk of parameter-space vectors.
        itemsize = fm.dtype.itemsize
        return min(n * outputs_per_sample(fm, kind) * fm.num_params * itemsize, CHUNK_BYTES)
