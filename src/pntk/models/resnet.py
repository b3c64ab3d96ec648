"""ResNet-18 with the CIFAR stem, for 1-D signals or 2-D images."""

from __future__ import annotations

from functools import partial

import torch.nn.functional as F
from torch import Tensor, nn

from .layers import RELU_GAIN, Parametrization, make_batch_norm, make_conv, make_linear


class BasicBlock(nn.Module):
    """Two 3-wide convolutions with BatchNorm and a skip: ``relu(bn(conv(relu(bn(conv(x))))) + skip(x))``.

    The skip is the identity, or a 1-wide strided convolution with BatchNorm when the stride or the number
    of channels changes.

    Args:
        in_channels: channels of the input.
        out_channels: channels of the output.
        stride: stride of the first convolution (and of the skip), 1 or 2.
        dim: 1 for ``[B, C, L]``, 2 for ``[B, C, H, W]``.
        parametrization: ``"standard"`` or ``"ntk"``; BatchNorm stays standard.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        stride: int = 1,
        *,
        dim: int = 2,
        parametrization: Parametrization | str = Parametrization.STANDARD,
    ) -> None:
        super().__init__()
        conv = partial(make_conv, dim, bias=False, parametrization=parametrization, sigma_w=RELU_GAIN)
        self.conv1 = conv(in_channels, out_channels, 3, stride=stride, padding=1)
        self.bn1 = make_batch_norm(dim, out_channels)
        self.conv2 = conv(out_channels, out_channels, 3, padding=1)
        self.bn2 = make_batch_norm(dim, out_channels)
        self.skip: nn.Module = nn.Identity()
        if stride != 1 or in_channels != out_channels:
            self.skip = nn.Sequential(
                conv(in_channels, out_channels, 1, stride=stride),
                make_batch_norm(dim, out_channels),
            )

    def forward(self, x: Tensor) -> Tensor:
        """``[B, C_in, *S]`` → ``[B, C_out, *S/stride]``."""
        h = F.relu(self.bn1(self.conv1(x)))
        return F.relu(self.bn2(self.conv2(h)) + self.skip(x))


class ResNet18(nn.Module):
    """ResNet-18 (He et al., 2016) with the CIFAR stem: a 3-wide, stride-1 convolution and no max-pool.

    Stem conv-BN-ReLU of ``w`` channels, four stages of two basic blocks with ``w, 2w, 4w, 8w`` channels
    (strides 1, 2, 2, 2), global average pool, linear readout. Convolutions have no bias. At
    ``base_width = 64`` with 3 input channels and 10 classes it has the usual 11,173,962 parameters; the
    count grows as ``w²`` for large ``w``. In NTK parametrisation every convolution uses ``σ_w = √2`` and
    the readout ``σ_w = 1``; BatchNorm stays standard.

    BatchNorm couples the samples of a batch in training mode: call ``.eval()`` before computing kernels.

    Args:
        num_classes: ``O``, the number of outputs.
        in_channels: ``C``, input channels.
        base_width: ``w``, channels of the stem and the first stage.
        dim: 1 for signals ``[B, C, L]``, 2 for images ``[B, C, H, W]``.
        parametrization: ``"standard"`` or ``"ntk"`` (see :mod:`pntk.models.layers`).

    Example:
        >>> import torch
        >>> ResNet18(10, in_channels=1, base_width=4).eval()(torch.zeros(2, 1, 8, 8)).shape
        torch.Size([2, 10])
    """

    def __init__(
        self,
        num_classes: int = 10,
        *,
        in_channels: int = 3,
        base_width: int = 64,
        dim: int = 2,
        parametrization: Parametrization | str = Parametrization.STANDARD,
    ) -> None:
        super().__init__()
        w = base_width
        self.stem = nn.Sequential(
            make_conv(
                dim, in_channels, w, 3, padding=1, bias=False, parametrization=parametrization, sigma_w=RELU_GAIN
            ),
            make_batch_norm(dim, w),
            nn.ReLU(),
        )
        block = partial(BasicBlock, dim=dim, parametrization=parametrization)
        blocks: list[nn.Module] = []
        channels = w
        for out_channels, stride in ((w, 1), (2 * w, 2), (4 * w, 2), (8 * w, 2)):
            for block_stride in (stride, 1):
                blocks.append(block(channels, out_channels, block_stride))
                channels = out_channels
        self.blocks = nn.Sequential(*blocks)
        self.readout = make_linear(channels, num_classes, parametrization=parametrization)

    def forward(self, x: Tensor) -> Tensor:
        """Map ``x: [B, C, L]`` (``dim=1``) or ``[B, C, H, W]`` (``dim=2``) to ``[B, O]``."""
        return self.readout(self.blocks(self.stem(x)).flatten(2).mean(-1))
