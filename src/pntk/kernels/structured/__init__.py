"""The structured engine: per-layer factors of the kernel.

A layer ``z_t = W a_t + b`` applied at ``T`` positions per sample contributes
``Σ_{t,u} (A A'ᵀ)_{tu} (D D'ᵀ)_{tu}`` to the kernel, from its inputs ``A ∈ R^{T×n}`` and the cotangents
``D ∈ R^{T×m}`` of its outputs: ``T²(n + m)`` multiply-adds per pair of samples instead of ``n·m``
(:mod:`pntk.kernels.structured.engine` gives the details; the user guide's *Kernels and engines* page compares
the engines).
``rules`` says how each kind of layer factors, ``operations`` and ``replays`` how parameters that enter through
functions rather than modules are found, ``plan`` which layers of a model are factored, ``capture`` how a block's
inputs and cotangents are captured, ``engine`` how blocks are prepared and contracted.
"""

from .engine import Costs, StructuredEngine, WorkingMemory

__all__ = ["Costs", "StructuredEngine", "WorkingMemory"]
