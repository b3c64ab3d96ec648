"""Per-channel standardisation: ``x̂[:, c] = (x[:, c]/s − μ_c)/σ_c`` with ``μ, σ`` of the training split.

``s`` scales raw values to ``[0, 1]`` (255 for 8-bit pixels). The statistics come from the training split
so that training and test inputs go through the same map. For 8-bit data they are computed from exact
integer sums, and the map is applied as a 256-entry lookup table per channel, block by block, so a full
dataset is never held in float64.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

_CHUNK = 1024  # samples per block when streaming over 8-bit data


@dataclass(frozen=True)
class Normalization:
    """The map a loader applied to raw values: ``x[:, c] = (raw[:, c]/scale − mean[c])/std[c]``.

    Computed in float64 and rounded once to float32, so applying it to the raw values again gives the same
    float32 inputs bit for bit.

    Attributes:
        scale: the divisor that maps raw values to ``[0, 1]`` (255 for 8-bit pixels, 16 for digits).
        mean: ``[C]`` the channel means subtracted (of the training split); ``None`` when not standardised.
        std: ``[C]`` the channel divisors (standard deviations of the training split, 1 for a constant
            channel, which is only centred); ``None`` when not standardised.
    """

    scale: float
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None

    def apply(self, raw: np.ndarray) -> torch.Tensor:
        """The normalised float32 inputs ``[N, C, *positions]`` of raw values ``[N, C, *positions]``.

        Example:
            >>> Normalization(255.0, (0.5,), (0.25,)).apply(np.array([[[0, 255]]], dtype=np.uint8))
            tensor([[[-2.,  2.]]])
        """
        return to_tensor(raw, scale=self.scale, mean=self.mean, std=self.std)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: ``{"scale": …, "mean": […] or None, "std": […] or None}``."""
        return {
            "scale": self.scale,
            "mean": None if self.mean is None else list(self.mean),
            "std": None if self.std is None else list(self.std),
        }


def channel_stats(x: np.ndarray, *, scale: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """Mean and (population) standard deviation of each channel of ``x / scale``, over samples and positions.

    Args:
        x: ``[N, C, *positions]``, uint8 or floating.
        scale: the divisor that maps raw values to ``[0, 1]``.

    Returns:
        ``(mean, std)``, float64 ``[C]`` each.

    Example:
        >>> mean, std = channel_stats(np.array([[[0, 255]], [[255, 255]]], dtype=np.uint8), scale=255)
        >>> mean.tolist(), std.round(4).tolist()  # std = √(3/16)
        ([0.75], [0.433])
    """
    channels = x.shape[1]
    mean, std = np.empty(channels), np.empty(channels)
    for c in range(channels):
        if x.dtype == np.uint8:
            # Exact integer moments: a constant channel gets std exactly 0, not a rounding residue.
            first = second = 0
            for start in range(0, len(x), _CHUNK):
                values: np.ndarray = x[start : start + _CHUNK, c].astype(np.uint16)  # 255² fits in 16 bits
                first += int(values.sum(dtype=np.int64))
                second += int((values * values).sum(dtype=np.int64))
            total = x[:, c].size
            mean[c] = first / total / scale
            std[c] = np.sqrt((total * second - first**2) / total**2) / scale
        else:
            values = x[:, c].astype(np.float64) / scale
            constant = values.min() == values.max()
            mean[c] = values.flat[0] if constant else values.mean()
            std[c] = 0.0 if constant else values.std()
    return mean, std


def to_tensor(
    x: np.ndarray,
    *,
    scale: float = 1.0,
    mean: np.ndarray | Sequence[float] | None = None,
    std: np.ndarray | Sequence[float] | None = None,
) -> torch.Tensor:
    """``x / scale`` as float32, standardised per channel when ``mean`` and ``std`` are given.

    A channel with ``std = 0`` (constant) is only centred.

    Args:
        x: ``[N, C, *positions]``, uint8 or floating.
        scale: the divisor that maps raw values to ``[0, 1]``.
        mean: ``[C]``, the channel means of ``x / scale`` to subtract.
        std: ``[C]``, the channel standard deviations to divide by.

    Returns:
        float32 ``[N, C, *positions]``, computed in float64 and rounded once.
    """
    channels = x.shape[1]
    mean = np.zeros(channels) if mean is None else np.asarray(mean, dtype=np.float64)
    std = np.ones(channels) if std is None else np.where(np.asarray(std) > 0, std, 1.0)
    if x.dtype == np.uint8:
        table = ((np.arange(256) / scale)[None, :] - mean[:, None]) / std[:, None]
        table = table.astype(np.float32)
        out = np.empty(x.shape, dtype=np.float32)
        # Blocks of samples keep the lookups in cache: one whole strided channel is several times slower.
        for start in range(0, len(x), _CHUNK):
            block = x[start : start + _CHUNK]
            for c in range(channels):
                out[start : start + _CHUNK, c] = table[c][block[:, c]]
    else:
        shape = (1, channels) + (1,) * (x.ndim - 2)
        out = ((x.astype(np.float64) / scale - mean.reshape(shape)) / std.reshape(shape)).astype(np.float32)
    return torch.from_numpy(out)
