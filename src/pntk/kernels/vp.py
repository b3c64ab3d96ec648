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
from torch.nn.attention import SDPBackend, sdpa_kernel

from .engine import outputs_per_sample
from .fallback import TRACE_ERRORS, attempt, cause, leaves
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
        """The tile from its columns ``J(a) (J(b)ᵀ e)``; where forward-mode AD is missing for an operation of
        the model (fused attention kernels) or ``vmap`` cannot trace it, from reverse-over-reverse products,
        with a warning."""
        B2, O = len(b), fm.num_outputs
        rows = outputs_per_sample(fm, kind)
        # One cotangent per (sample of b, output direction): e_j ⊗ 1/√O for the pNTK, e_j ⊗ e_b otherwise.
        eye = torch.eye(B2 * rows, device=fm.device, dtype=fm.dtype).reshape(B2 * rows, B2, rows)
        cotangents = eye.expand(-1, -1, O) / math.sqrt(O) if kind is Kind.PNTK else eye
        cols = attempt(
            self.name,
            fm,
            lambda: self._forward_over_reverse(fm, a, b, cotangents),
            lambda: _reverse_over_reverse(fm, a, b, cotangents),
            "computing Jacobian-vector products by reverse-over-reverse (double VJP) instead",
        )  # [B2·rows, B1, O]
        B1 = len(a)
        if kind is Kind.PNTK:
            return cols.sum(-1).T / math.sqrt(O)
        theta = cols.reshape(B2, O, B1, O).permute(2, 0, 3, 1)  # [B1, B2, O, O]
        if kind is Kind.ENTK:
            return theta
        return theta.diagonal(dim1=2, dim2=3).sum(-1) / O

    def _forward_over_reverse(self, fm: FunctionalModel, a: Inputs, b: Inputs, cotangents: Tensor) -> Tensor:
        """``J(a) J(b)ᵀ c`` for each cotangent ``c`` by a ``vjp`` then a ``jvp``, vectorised over ``c``."""
        pullback = vjp(lambda p: fm(p, b), fm.params)[1]

        def column(cotangent: Tensor) -> Tensor:
            (tangent,) = pullback(cotangent)
            return jvp(lambda p: fm(p, a), (fm.params,), (tangent,))[1]  # [B1, O]

        chunk = max(1, CHUNK_BYTES // max(1, fm.num_params * fm.dtype.itemsize))
        return vmap(column, chunk_size=min(chunk, len(cotangents)))(cotangents)

    def block_bytes(self, fm: FunctionalModel, n: int, kind: Kind) -> int:
        # A block is only its inputs; a contraction holds at most one chunk of parameter-space vectors.
        itemsize = fm.dtype.itemsize
        return min(n * outputs_per_sample(fm, kind) * fm.num_params * itemsize, CHUNK_BYTES)


def _reverse_over_reverse(fm: FunctionalModel, a: Inputs, b: Inputs, cotangents: Tensor) -> Tensor:
    """``J(a) J(b)ᵀ c`` for each cotangent ``c`` with reverse mode only.

    ``h(u) = J(a)ᵀ u`` is linear in ``u``, so its vector-Jacobian product with a tangent ``t`` is ``J(a) t``:
    one backward pass of ``f(b)`` gives ``t = J(b)ᵀ c``, one backward pass through the graph of ``h`` gives
    the column. Both are vectorised over ``c`` where ``vmap`` can, one ``c`` at a time otherwise. Scaled
    dot-product attention runs on its math backend, the one with a double backward.

    Raises:
        ValueError: an operation of the model has neither forward-mode AD nor a double backward.
    """
    params = leaves(fm.params)
    names = list(params)
    # Fused attention kernels have no double backward; the math backend computes the same attention from
    # matmuls and a softmax, which have.
    with torch.enable_grad(), sdpa_kernel(SDPBackend.MATH):
        out_b = fm(params, b)
        out_a = fm(params, a)
        u = torch.zeros_like(out_a, requires_grad=True)
        try:
            h = torch.autograd.grad(out_a, list(params.values()), u, create_graph=True, allow_unused=True)
        except RuntimeError as error:
            raise ValueError(
                f"engine 'vp' cannot differentiate this model twice ({cause(error)}); use engine='jacobian' or "
                "engine='structured', which need only one reverse pass"
            ) from error
        used = [k for k, g in enumerate(h) if g is not None and g.requires_grad]
        if not used or not out_b.requires_grad:
            return cotangents.new_zeros(len(cotangents), *out_a.shape)
        chunk = max(1, CHUNK_BYTES // max(1, fm.num_params * fm.dtype.itemsize))
        columns = []
        for c in cotangents.split(chunk):
            t = _batched_grad(out_b, [params[names[k]] for k in used], c)
            try:
                columns.append(_batched_grad([h[k] for k in used], [u], t)[0])
            except RuntimeError as error:
                raise ValueError(
                    f"engine 'vp' found neither forward-mode AD nor a double backward for an operation of this "
                    f"model ({cause(error)}); use engine='jacobian' or engine='structured'"
                ) from error
    return torch.cat(columns).detach()


def _batched_grad(outputs, inputs: list[Tensor], cotangents) -> list[Tensor]:
    """``∂⟨outputs, c⟩/∂inputs`` for each of a batch of cotangents ``c`` (leading axis), vectorised by
    autograd's ``is_grads_batched`` where ``vmap`` can, one at a time otherwise. Unused inputs get zeros."""
    outputs = outputs if isinstance(outputs, list) else [outputs]
    cotangents = cotangents if isinstance(cotangents, list) else [cotangents]
    try:
        grads = torch.autograd.grad(
            outputs, inputs, cotangents, retain_graph=True, is_grads_batched=True, allow_unused=True
        )
    except TRACE_ERRORS:
        rows = [
            torch.autograd.grad(outputs, inputs, [c[i] for c in cotangents], retain_graph=True, allow_unused=True)
            for i in range(len(cotangents[0]))
        ]
        grads = tuple(
            None if rows[0][k] is None else torch.stack([r[k] for r in rows])  # type: ignore[misc]
            for k in range(len(inputs))
        )
    n = len(cotangents[0])
    return [x.new_zeros(n, *x.shape) if g is None else g for g, x in zip(grads, inputs)]
