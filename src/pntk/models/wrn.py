"""Wide residual network WRN-d-k (Zagoruyko & Komodakis, 2016), for 1-D signals or 2-D images."""

from __future__ import annotations

from functools import partial

import torch.nn.functional as F
from torch import Tensor, nn

from .layers import RELU_GAIN, Parametrization, make_batch_norm, make_conv, make_linear


class WideBlock(nn.Module):
    """Pre-activation block: ``conv(drop(relu(bn(conv(relu(bn(x))))))) + skip``.

    The skip is ``x``, or a 1-wide strided convolution of ``relu(bn(x))`` when the stride or the number of
    channels changes (as in the reference implementation).

    Args:
        in_channels: channels of the input.
        out_channels: channels of the output.
        stride: stride of the first convolution (and of the skip), 1 or 2.
        dropout: dropout probability between the two convolutions; 0 adds no dropout layer.
        dim: 1 for ``[B, C, L]``, 2 for ``[B, C, H, W]``.
        parametrization: ``"standard"`` or ``"ntk"``; BatchNorm stays standard.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        stride: int = 1,
        *,
        dropout: float = 0.0,
        dim: int = 2,
        parametrization: Parametrization | str = Parametrization.STANDARD,
    ) -> None:
        super().__init__()
        conv = partial(make_conv, dim, bias=False, parametrization=parametrization, sigma_w=RELU_GAIN)
        self.bn1 = make_batch_norm(dim, in_channels)
        self.conv1 = conv(in_channels, out_channels, 3, stride=stride, padding=1)
        self.bn2 = make_batch_norm(dim, out_channels)
        self.dropout: nn.Module = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.conv2 = conv(out_channels, out_channels, 3, padding=1)
        self.skip: nn.Module | None = None
        if stride != 1 or in_channels != out_channels:
            self.skip = conv(in_channels, out_channels, 1, stride=stride)

    def forward(self, x: Tensor) -> Tensor:
        """``[B, C_in, *S]`` → ``[B, C_out, *S/stride]``."""
        a = F.relu(self.bn1(x))
        h = self.conv2(self.dropout(F.relu(self.bn2(self.conv1(a)))))
        return h + (x if self.skip is None else self.skip(a))


class WideResNet(nn.Module):
    """WRN-``depth``-``widen_factor``: three groups of ``n = (depth − 4)/6`` wide blocks.

    A 3-wide stem convolution of 16 channels, groups of :class:`WideBlock` with ``16k, 32k, 64k`` channels
    (strides 1, 2, 2), a final BN-ReLU, global average pool and linear readout. Convolutions have no bias.
    WRN-28-10 on CIFAR-10 has 36,479,194 parameters. In NTK parametrisation every convolution uses
    ``σ_w = √2`` and the readout ``σ_w = 1``; BatchNorm stays standard.

    BatchNorm couples the samples of a batch (and dropout, when on, makes the function random) in training
    mode: call ``.eval()`` before computing kernels.

    Args:
        depth: ``6n + 4`` for ``n ≥ 1`` blocks per group (10, 16, 22, 28, 40, ...).
        widen_factor: ``k``, the channel multiplier.
        num_classes: ``O``, the number of outputs.
        in_channels: ``C``, input channels.
        dropout: dropout probability inside each block; 0 (the default) adds no dropout layers.
        dim: 1 for signals ``[B, C, L]``, 2 for images ``[B, C, H, W]``.
        parametrization: ``"standard"`` or ``"ntk"`` (see :mod:`pntk.models.layers`).

    Raises:
        ValueError: if ``depth`` is not ``6n + 4`` with ``n ≥ 1``.

    Example:
        >>> import torch
        >>> WideResNet(10, 1, num_classes=10, in_channels=1, dim=1).eval()(torch.zeros(2, 1, 40)).shape
        torch.Size([2, 10])
    """

    def __init__(
        self,
        depth: int,
        widen_factor: int,
        num_classes: int = 10,
        *,
        in_channels: int = 3,
        dropout: float = 0.0,
        dim: int = 2,
        parametrization: Parametrization | str = Parametrization.STANDARD,
    ) -> None:
        super().__init__()
        n, remainder = divmod(depth - 4, 6)
        if remainder or n < 1:
            raise ValueError(f"WideResNet depth must be 6n + 4 with n >= 1 (10, 16, 22, 28, ...), got {depth}")
        self.stem = make_conv(
            dim, in_channels, 16, 3, padding=1, bias=False, parametrization=parametrization, sigma_w=RELU_GAIN
        )
        block = partial(WideBlock, dropout=dropout, dim=dim, parametrization=parametrization)
        blocks: list[nn.Module] = []
        channels = 16
        for out_channels, stride in ((16 * widen_factor, 1), (32 * widen_factor, 2), (64 * widen_factor, 2)):
            for i in range(n):
                blocks.append(block(channels, out_channels, stride if i == 0 else 1))
                channels = out_channels
        self.blocks = nn.Sequential(*blocks)
        self.bn = make_batch_norm(dim, channels)
        self.readout = make_linear(channels, num_classes, parametrization=parametrization)

    def forward(self, x: Tensor) -> Tensor:
        """Map ``x: [B, C, L]`` (``dim=1``) or ``[B, C, H, W]`` (``dim=2``) to ``[B, O]``."""
        h = F.relu(self.bn(self.blocks(self.stem(x))))
        return self.readout(h.flatten(2).mean(-1))
