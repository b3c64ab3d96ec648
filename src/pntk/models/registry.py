"""Build any model of the zoo by name, from the shape of one sample."""

from __future__ import annotations

import math
from collections.abc import Sequence
from enum import Enum

import torch
from torch import nn

from .convnet import ConvNet
from .layers import Parametrization
from .mlp import MLP
from .resnet import ResNet18
from .wrn import WideResNet


class ModelName(str, Enum):
    """Names accepted by :func:`build_model`; the plain strings work too."""

    MLP = "mlp"
    CONVNET = "convnet"
    RESNET18 = "resnet18"
    WRN = "wrn"

    @classmethod
    def _missing_(cls, value: object) -> ModelName:
        valid = ", ".join(repr(m.value) for m in cls)
        raise ValueError(f"unknown model {value!r}; valid names: {valid}")


#: Depth used when ``build_model`` gets ``depth=None``: hidden layers (MLP), Myrtle-5, ResNet-18, WRN-16-k.
DEFAULT_DEPTHS = {ModelName.MLP: 2, ModelName.CONVNET: 5, ModelName.RESNET18: 18, ModelName.WRN: 16}


def build_model(
    name: ModelName | str,
    *,
    width: int,
    depth: int | None = None,
    in_shape: Sequence[int],
    num_classes: int,
    parametrization: Parametrization | str = Parametrization.STANDARD,
    seed: int | None = None,
) -> nn.Module:
    """A freshly initialised model of the zoo, mapping ``[B, *in_shape]`` to ``[B, num_classes]``.

    What ``width`` and ``depth`` mean depends on the model:

    ============  ==========================  ==========================================================
    name          ``width``                   ``depth`` (default)
    ============  ==========================  ==========================================================
    ``mlp``       hidden units                hidden layers (2); any ``in_shape``, flattened
    ``convnet``   channels                    convolutions + readout (5, Myrtle-5); see :class:`ConvNet`
    ``resnet18``  base width (64 standard)    fixed at 18: ``None`` or 18
    ``wrn``       widen factor ``k``          ``6n + 4`` (16)
    ============  ==========================  ==========================================================

    Convolutional models take ``in_shape = (C, L)`` (1-D, e.g. MNIST-1D's ``(1, 40)``) or ``(C, H, W)``
    (2-D, e.g. digits' ``(1, 8, 8)``, CIFAR's ``(3, 32, 32)``).

    The model is returned in training mode, PyTorch's default. Kernels need ``model.eval()``: BatchNorm
    (ResNet-18, WRN) couples the samples of a batch in training mode.

    Args:
        name: one of ``"mlp"``, ``"convnet"``, ``"resnet18"``, ``"wrn"``.
        width: see the table; a positive integer.
        depth: see the table; ``None`` takes the default.
        in_shape: the shape of one sample, without the batch axis.
        num_classes: ``O``, the number of outputs.
        parametrization: ``"standard"`` or ``"ntk"`` (see :mod:`pntk.models.layers`).
        seed: if given, the initialisation is drawn after ``torch.manual_seed(seed)`` inside a fork of the
            global random state, which is left untouched, so equal seeds give identical models; ``None``
            draws from (and advances) the global state.

    Returns:
        The model, an ``nn.Module`` on the CPU in ``float32``.

    Raises:
        ValueError: for an unknown name or parametrisation, a non-positive width, a depth the model does
            not accept, or an ``in_shape`` a convolutional model cannot read.

    Example:
        >>> import torch
        >>> model = build_model("convnet", width=16, in_shape=(1, 8, 8), num_classes=10, seed=0)
        >>> model(torch.zeros(4, 1, 8, 8)).shape
        torch.Size([4, 10])
    """
    name = ModelName(name)
    parametrization = Parametrization(parametrization)
    in_shape = tuple(int(s) for s in in_shape)
    if width < 1:
        raise ValueError(f"width must be a positive integer, got {width!r}")
    if name is ModelName.RESNET18 and depth not in (None, 18):
        raise ValueError(f"resnet18 has a fixed depth of 18; pass depth=None, got {depth!r}")
    depth = DEFAULT_DEPTHS[name] if depth is None else depth
    if name is not ModelName.MLP and len(in_shape) not in (2, 3):
        raise ValueError(
            f"{name.value} is convolutional and needs in_shape (C, L) for signals or (C, H, W) for images, "
            f"got {in_shape}; use 'mlp' for flat inputs"
        )
    if seed is None:
        return _construct(name, width, depth, in_shape, num_classes, parametrization)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return _construct(name, width, depth, in_shape, num_classes, parametrization)


def _construct(
    name: ModelName,
    width: int,
    depth: int,
    in_shape: tuple[int, ...],
    num_classes: int,
    parametrization: Parametrization,
) -> nn.Module:
    if name is ModelName.MLP:
        return MLP(math.prod(in_shape), width, depth, num_classes, parametrization=parametrization)
    in_channels, dim = in_shape[0], len(in_shape) - 1
    if name is ModelName.CONVNET:
        return ConvNet(in_channels, width, depth, num_classes, dim=dim, parametrization=parametrization)
    if name is ModelName.RESNET18:
        return ResNet18(
            num_classes, in_channels=in_channels, base_width=width, dim=dim, parametrization=parametrization
        )
    return WideResNet(depth, width, num_classes, in_channels=in_channels, dim=dim, parametrization=parametrization)
