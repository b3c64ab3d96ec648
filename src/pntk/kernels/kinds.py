"""The kinds of kernel and the engines that compute them, as string enums.

Both ``"pntk"`` and ``Kind.PNTK`` are accepted wherever a kind is expected; an unknown value raises a
``ValueError`` that lists the valid ones.
"""

from __future__ import annotations

import enum


class Kind(str, enum.Enum):
    """What a kernel tile holds for ``N1 × N2`` inputs of a network with ``O`` outputs.

    - ``ENTK``: the empirical NTK ``Θ(x, x') = J(x) J(x')ᵀ``, shape ``[N1, N2, O, O]``.
    - ``TRACE``: the trace NTK ``(1/O) tr Θ(x, x')``, shape ``[N1, N2]``.
    - ``PNTK``: the pseudo-NTK ``(1/O) 1ᵀ Θ(x, x') 1``, shape ``[N1, N2]``: the eNTK of the network with a
      fixed ``1ᵀ/√O`` summing layer on top.
    """

    ENTK = "entk"
    TRACE = "trace"
    PNTK = "pntk"

    @property
    def is_matrix_valued(self) -> bool:
        """Whether a tile carries the ``O × O`` output axes."""
        return self is Kind.ENTK

    @property
    def cotangents_per_sample(self) -> int | None:
        """Backward passes per sample: one for the pNTK (the summed output), ``None`` meaning ``O``."""
        return 1 if self is Kind.PNTK else None


class Engine(str, enum.Enum):
    """How a tile is computed. Every engine computes every kind, to rounding.

    - ``JACOBIAN``: per-sample Jacobians through ``torch.func`` (``vmap`` over ``grad``/``jacrev``),
      contracted with matmuls. General and simple; holds ``B · O · P`` numbers per block of ``B`` samples
      (``B · P`` for the pNTK).
    - ``VP``: NTK-vector products, a ``vjp`` on one block followed by a ``jvp`` on the other, never
      holding a Jacobian. Wins when ``P`` is huge and the forward pass is cheap.
    - ``STRUCTURED``: per-layer factors (layer inputs and output cotangents) contracted layer by layer,
      ``T²(n + m)`` per pair and layer instead of ``n · m``; other parameters fall back to per-sample
      gradients.
    - ``AUTO``: the engine expected to be fastest for this model, kind and block size.
    """

    AUTO = "auto"
    JACOBIAN = "jacobian"
    VP = "vp"
    STRUCTURED = "structured"
