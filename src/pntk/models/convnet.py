"""Myrtle-style convolutional network for 1-D signals or 2-D images."""

from __future__ import annotations

from torch import Tensor, nn

from .layers import RELU_GAIN, Parametrization, make_conv, make_linear

_POOLS = {1: nn.AvgPool1d, 2: nn.AvgPool2d}


def stage_depths(depth: int) -> tuple[int, int, int]:
    """Convolutions in each of the three stages of a ``depth``-layer :class:`ConvNet` (stem included).

    The ``depth - 1`` convolutions are split as evenly as possible, extra ones going to earlier stages;
    this reproduces the Myrtle-5, -7 and -10 networks.

    Example:
        >>> stage_depths(5), stage_depths(7), stage_depths(10)
        ((2, 1, 1), (2, 2, 2), (3, 3, 3))
    """
    if depth < 4:
        raise ValueError(f"ConvNet depth counts convolutions plus the readout and must be >= 4, got {depth}")
    base, extra = divmod(depth - 1, 3)
    return tuple(base + (i < extra) for i in range(3))  # type: ignore[return-value]


class ConvNet(nn.Module):
    """Myrtle network: conv-ReLU stages separated by 2× average pooling, global average pool, linear readout.

    The Myrtle family (Page's fast CIFAR network without BatchNorm or skips, as used for neural kernels by
    Shankar et al., 2020) with ``depth - 1`` 3-wide, same-padded convolutions of ``width`` channels split
    into three stages by :func:`stage_depths`; the first convolution is the stem. Stages 1 and 2 end in a
    2× average pool, stage 3 in a global average pool, so the spatial size must be at least 4 (8×8 digits,
    40-long MNIST-1D, 32×32 CIFAR all work). With bias the number of parameters is

    .. math::

        P = (3^{k} C + 1) w + (\\mathrm{depth} - 2)(3^{k} w + 1) w + (w + 1) O, \\qquad k = \\mathrm{dim}.

    In NTK parametrisation the convolutions use ``σ_w = √2`` (ReLU's gain) and the readout ``σ_w = 1``.

    Args:
        in_channels: ``C``, input channels.
        width: ``w``, channels of every convolution.
        depth: convolutions plus the readout, ``≥ 4``; 5, 7, 10 are Myrtle-5, -7, -10.
        out_features: ``O``, the number of outputs.
        dim: 1 for signals ``[B, C, L]``, 2 for images ``[B, C, H, W]``.
        parametrization: ``"standard"`` or ``"ntk"`` (see :mod:`pntk.models.layers`).
        bias: whether convolutions and readout have biases.

    Example:
        >>> import torch
        >>> ConvNet(1, width=8, depth=5, out_features=10, dim=1)(torch.zeros(2, 1, 40)).shape
        torch.Size([2, 10])
    """

    def __init__(
        self,
        in_channels: int,
        width: int,
        depth: int = 5,
        out_features: int = 10,
        *,
        dim: int = 2,
        parametrization: Parametrization | str = Parametrization.STANDARD,
        bias: bool = True,
    ) -> None:
        super().__init__()
        if dim not in _POOLS:
            raise ValueError(f"dim must be 1 (signals [B, C, L]) or 2 (images [B, C, H, W]), got {dim!r}")
        layers: list[nn.Module] = []
        channels = in_channels
        for stage, n_convs in enumerate(stage_depths(depth)):
            for _ in range(n_convs):
                conv = make_conv(
                    dim,
                    channels,
                    width,
                    3,
                    padding=1,
                    bias=bias,
                    parametrization=parametrization,
                    sigma_w=RELU_GAIN,
                )
                layers += [conv, nn.ReLU()]
                channels = width
            if stage < 2:
                layers.append(_POOLS[dim](2))
        self.features = nn.Sequential(*layers)
        self.readout = make_linear(width, out_features, bias=bias, parametrization=parametrization)

    def forward(self, x: Tensor) -> Tensor:
        """Map ``x: [B, C, L]`` (``dim=1``) or ``[B, C, H, W]`` (``dim=2``) to ``[B, O]``."""
        return self.readout(self.features(x).flatten(2).mean(-1))
