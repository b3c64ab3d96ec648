"""What an engine is: per-block preparation, then a contraction of two prepared blocks into a tile.

A tile is ``kernel(X1[i:i+B1], X2[j:j+B2])``. Splitting the work in two lets a tile loop prepare a row block
once and reuse it for every column block of its row: the Jacobian engine prepares per-sample Jacobians,
the structured engine per-layer factors, the vector-product engine just keeps the inputs.
"""

from __future__ import annotations

from typing import Any, Protocol

from torch import Tensor

from .inputs import Inputs
from .kinds import Kind
from .model import FunctionalModel


class KernelEngine(Protocol):
    """One way to compute kernel tiles; every engine computes every :class:`Kind` to rounding."""

    name: str

    def prepare(self, fm: FunctionalModel, x: Inputs, kind: Kind) -> Any:
        """Whatever this engine needs of a block ``x`` of ``B`` samples (computed once, reused)."""

    def contract(self, fm: FunctionalModel, a: Any, b: Any, kind: Kind, *, same: bool) -> Tensor:
        """The tile between two prepared blocks.

        Args:
            a: a prepared block of ``B1`` samples.
            b: a prepared block of ``B2`` samples.
            same: ``a`` and ``b`` are the same block (a diagonal tile, which is symmetric).

        Returns:
            ``[B1, B2, O, O]`` for ``Kind.ENTK``, ``[B1, B2]`` otherwise.
        """

    def block_bytes(self, fm: FunctionalModel, n: int, kind: Kind) -> int:
        """An estimate of the memory that one prepared block of ``n`` samples holds, in bytes."""


def outputs_per_sample(fm: FunctionalModel, kind: Kind) -> int:
    """How many output directions a kind needs per sample: 1 for the pNTK (the summed output), else ``O``."""
    return kind.cotangents_per_sample or fm.num_outputs
