"""The Jacobian engine: per-sample Jacobians through ``torch.func``, contracted with matmuls.

Cost for a tile: ``B·O`` backward passes (vectorised by ``vmap``) and ``B1·B2·O²·P`` multiply-adds for the
eNTK (``B1·B2·P`` for the pNTK, ``B1·B2·O·P`` for the trace); memory ``B·O·P`` per block.
"""

from __future__ import annotations

import math
from typing import cast

from torch import Tensor
from torch.func import grad, jacrev, vmap

from .engine import outputs_per_sample
from .fallback import TRACE_ERRORS, attempt, fallback_reason, per_sample_jacobians
from .inputs import Inputs
from .kinds import Kind
from .model import FunctionalModel
from .selection import group_of


class JacobianEngine:
    """Per-sample Jacobians ``J(x) ∈ R^{O×P}`` (``∇g(x) ∈ R^P`` for the pNTK), one tensor per parameter."""

    name = "jacobian"

    def prepare(self, fm: FunctionalModel, x: Inputs, kind: Kind) -> list[Tensor]:
        """Per-sample Jacobians of a block.

        Returns:
            one tensor per parameter, ``[B, O, numel]`` (``[B, 1, numel]`` for the pNTK, the gradient of
            ``g = O^{-1/2} Σ_a f_a``).

        Where ``vmap`` cannot trace the model (``.item()``, data-dependent control flow, recurrent layers'
        hidden states), the same Jacobians come from one autograd pass per sample, with a warning.
        """
        return attempt(
            self.name,
            fm,
            lambda: self._vectorised(fm, x, kind),
            lambda: per_sample_jacobians(fm, x, kind),
            "computing per-sample gradients with one autograd pass per sample instead",
        )

    def traces(self, fm: FunctionalModel, kind: Kind) -> bool:
        """Whether ``vmap`` traces the model: it has not failed on it before, and it does not fail on the
        inputs the model was checked on (tried without the warning or the memory of a failure)."""
        if fallback_reason(self.name, fm.module) is not None:
            return False
        if fm.sample is None:
            return True
        try:
            self._vectorised(fm, fm.sample[: min(2, len(fm.sample))], kind)
        except TRACE_ERRORS:
            return False
        return True

    def _vectorised(self, fm: FunctionalModel, x: Inputs, kind: Kind) -> list[Tensor]:
        scale = 1.0 / math.sqrt(fm.num_outputs)

        def f_one(params, *sample):
            out = fm(params, Inputs(tuple(t.unsqueeze(0) for t in sample), x.keys))[0]
            return out.sum() * scale if kind is Kind.PNTK else out

        derivative = grad(f_one) if kind is Kind.PNTK else jacrev(f_one)
        in_dims = (None,) + (0,) * len(x.tensors)
        jac = vmap(derivative, in_dims=in_dims)(fm.params, *x.tensors)
        rows = outputs_per_sample(fm, kind)
        return [j.reshape(len(x), rows, -1) for j in jac.values()]

    def contract(self, fm: FunctionalModel, a: list[Tensor], b: list[Tensor], kind: Kind, *, same: bool) -> Tensor:
        return _contract(fm, a, b, kind)

    def contract_parts(
        self, fm: FunctionalModel, a: list[Tensor], b: list[Tensor], kind: Kind, *, same: bool
    ) -> dict[str, Tensor]:
        """The tile's part from each parameter group (module path), which sum to :meth:`contract`'s tile."""
        groups: dict[str, list[int]] = {}
        for k, name in enumerate(fm.params):
            groups.setdefault(group_of(name), []).append(k)
        return {g: _contract(fm, [a[k] for k in ks], [b[k] for k in ks], kind) for g, ks in groups.items()}

    def block_bytes(self, fm: FunctionalModel, n: int, kind: Kind) -> int:
        return n * outputs_per_sample(fm, kind) * fm.num_params * fm.dtype.itemsize


def _contract(fm: FunctionalModel, a: list[Tensor], b: list[Tensor], kind: Kind) -> Tensor:
    """The tile between per-sample Jacobians ``[B, R, numel]`` of the same parameters."""
    B1, B2, O = a[0].shape[0], b[0].shape[0], fm.num_outputs
    if kind is Kind.ENTK:
        out = cast(Tensor, sum(ja.reshape(B1 * O, -1) @ jb.reshape(B2 * O, -1).T for ja, jb in zip(a, b)))
        return out.reshape(B1, O, B2, O).permute(0, 2, 1, 3)
    # The trace contracts the output axis along with the parameters; the pNTK has one output row.
    out = cast(Tensor, sum(ja.reshape(B1, -1) @ jb.reshape(B2, -1).T for ja, jb in zip(a, b)))
    return out / O if kind is Kind.TRACE else out
