"""Kernels as linear operators: products without forming the kernel.

- :func:`operator` / :class:`KernelOperator`: a network's NTK (pNTK, eNTK, trace) through per-layer factors or
  NTK-vector products;
- :class:`StoreOperator`: a kernel stored on disk, streamed tile by tile;
- :class:`DenseOperator`: a matrix in memory;
- :class:`LinearOperator`: their base (``@``, ``.T``, ``.diagonal()``, ``.to_scipy()``).
"""

from ..planning import ProductPlan, plan_product
from .base import DenseOperator, LinearOperator
from .kernel import KernelOperator, operator
from .store import StoreOperator

__all__ = [
    "DenseOperator",
    "KernelOperator",
    "LinearOperator",
    "ProductPlan",
    "StoreOperator",
    "operator",
    "plan_product",
]
