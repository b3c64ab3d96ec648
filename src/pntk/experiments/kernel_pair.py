"""The eNTK and the pNTK of one network on the same inputs, computed in one dtype and analysed in float64."""

# NOTE: [Kernel precision]
# Kernels are computed in the dtype an experiment names (``"float64"`` by default) and every analysis runs in
# float64, told the dtype the kernels came from (``kernel_dtype=``) so that its tolerances are those of the
# kernels: float32 kernels carry rounding of about 2√n·ε·max K_ii, which is harmless for the Frobenius errors
# and λ_max but swamps λ_min of a nearly singular eNTK. On a CPU float64 costs 1.2× (MLP) to 3× (ConvNet) the
# time of float32, so the presets keep float64 for every kernel that is analysed and use float32 only where
# time is what is measured, and for the large GPU models of the paper preset.

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from ..kernels import entk, pntk
from .runtime import timed, torch_dtype


@dataclass(frozen=True)
class KernelPair:
    """The eNTK and the pNTK of one network on the same inputs, as float64 NumPy arrays.

    Attributes:
        Theta: ``[N1, N2, O, O]`` eNTK.
        K: ``[N1, N2]`` pNTK.
        dtype: the dtype both were computed in, e.g. ``"float32"``.
        seconds_entk: wall time of the eNTK.
        seconds_pntk: wall time of the pNTK.
    """

    Theta: np.ndarray
    K: np.ndarray
    dtype: str
    seconds_entk: float
    seconds_pntk: float


def kernel_pair(model: nn.Module, x1: torch.Tensor, x2: torch.Tensor | None = None, *, dtype: str) -> KernelPair:
    """The eNTK ``Θ`` and pNTK ``K`` of ``model`` between ``x1`` ``[N1, *input]`` and ``x2`` (``None``: ``x1``).

    Both are computed in ``dtype`` (see NOTE [Kernel precision]) and returned in float64.
    """
    dt = torch_dtype(dtype)
    Theta, seconds_entk = timed(lambda: entk(model, x1, x2, dtype=dt))
    K, seconds_pntk = timed(lambda: pntk(model, x1, x2, dtype=dt))
    return KernelPair(as_float64(Theta), as_float64(K), dtype, seconds_entk, seconds_pntk)


def as_float64(t: torch.Tensor) -> np.ndarray:
    """A tensor on any device as a float64 NumPy array."""
    return t.detach().to("cpu", torch.float64).numpy()
