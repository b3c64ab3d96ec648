"""The structured engine: per-layer factors of the kernel (DESIGN.md §2).

``rules`` says how each kind of layer factors, ``capture`` which layers of a model are factored and how their
inputs and cotangents are captured, ``engine`` how blocks are prepared and contracted.
"""

from .engine import StructuredEngine

__all__ = ["StructuredEngine"]
