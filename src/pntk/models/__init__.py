"""Width-parametrised networks for kernel studies: MLP, Myrtle ConvNet, ResNet-18, WideResNet.

Every model maps ``[B, *in_shape]`` to ``[B, O]`` and comes in the standard or the NTK parametrisation
(:mod:`pntk.models.layers` states the contract of the NTK layers). Models are returned in training mode;
kernels need ``model.eval()``.
"""

from .convnet import ConvNet, stage_depths
from .layers import (
    RELU_GAIN,
    SIGMA_B,
    NTKConv1d,
    NTKConv2d,
    NTKLinear,
    Parametrization,
    layer_scales,
    make_batch_norm,
    make_conv,
    make_linear,
)
from .mlp import MLP
from .registry import DEFAULT_DEPTHS, ModelName, build_model
from .resnet import BasicBlock, ResNet18
from .wrn import WideBlock, WideResNet

__all__ = [
    "DEFAULT_DEPTHS",
    "MLP",
    "RELU_GAIN",
    "SIGMA_B",
    "BasicBlock",
    "ConvNet",
    "ModelName",
    "NTKConv1d",
    "NTKConv2d",
    "NTKLinear",
    "Parametrization",
    "ResNet18",
    "WideBlock",
    "WideResNet",
    "build_model",
    "layer_scales",
    "make_batch_norm",
    "make_conv",
    "make_linear",
    "stage_depths",
]
