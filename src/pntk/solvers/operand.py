"""What solvers accept as a kernel: a tensor, a NumPy array, a pntk operator or a kernel store.

Solvers keep their vectors in float64 on the operator's device and cast at each product: a float32 operator
computes in float32, the recurrences run in float64.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import Tensor

from ..operators.base import DenseOperator, LinearOperator
from ..store import KernelStore


def as_operator(K: Any, name: str = "K") -> LinearOperator:
    """``K`` as a :class:`pntk.operators.LinearOperator`.

    Args:
        K: a pntk operator (returned as it is); a :class:`pntk.KernelStore` (streamed, never loaded whole);
            a matrix as a tensor or NumPy array, or an eNTK ``[N1, N2, O, O]`` (taken as its
            ``[N1·O, N2·O]`` matrix, row ``n·O + a``).
        name: the argument's name in error messages.

    Raises:
        TypeError: anything else.
    """
    if isinstance(K, LinearOperator):
        return K
    if isinstance(K, KernelStore):
        return K.operator()
    if isinstance(K, (np.ndarray, Tensor)):
        M = torch.as_tensor(K)
        if M.dim() == 4:
            N1, N2, O, _ = M.shape
            M = M.permute(0, 2, 1, 3).reshape(N1 * O, N2 * O)
        return DenseOperator(M)
    raise TypeError(
        f"{name} must be a tensor, a NumPy array, a pntk operator (pntk.operator) or a KernelStore (pntk.open); "
        f"got {type(K).__name__}"
    )


def product(op: LinearOperator, V: Tensor) -> Tensor:
    """``op @ V`` for a float64 block ``V [n_cols, k]``, returned in float64 on ``V``'s device."""
    return (op @ V.to(op.dtype)).to(V.device, torch.float64).reshape(op.shape[0], V.shape[1])


def as_float64(x: Any, device: torch.device) -> Tensor:
    """A tensor or array as a float64 tensor on ``device``."""
    return torch.as_tensor(np.asarray(x) if not isinstance(x, Tensor) else x).to(device, torch.float64)
