"""Dense and convolutional layers in the standard, NTK or PyTorch-default parametrisation.

Three labelled parametrisations, the first two as the pNTK paper's neural-tangents networks use them:

- *standard* (He-scaled): a plain ``nn.Linear`` / ``nn.Conv1d`` / ``nn.Conv2d`` whose weights are drawn
  ``N(0, σ_w²/n_in)`` and biases ``N(0, σ_b²)``, with ``σ_w² = 2`` for a layer feeding a ReLU (He et al.,
  2015), so the second moment of the pre-activations stays constant with depth;
- *NTK* (Jacot et al., 2018): the same network function at initialisation, but the parameters are drawn
  ``N(0, 1)`` and the scales moved into the forward pass (below);
- *torch*: PyTorch's default initialisation, ``U(−1/√n_in, 1/√n_in)`` for weights and biases — weight
  variance ``1/(3 n_in)``, so each ReLU layer shrinks the signal's second moment about six-fold. Shown only
  as a labelled variant: it is not a parametrisation the paper uses.

In the NTK parametrisation the parameters are initialised ``N(0, 1)`` and scaled in the forward pass:

.. math::

    z = \\frac{\\sigma_w}{\\sqrt{n_{\\mathrm{in}}}} W a + \\sigma_b b,

where ``n_in`` is the fan-in (``in_features``, or ``in_channels / groups × prod(kernel_size)``). The scale
moves from the initial values into the function, so gradients with respect to ``W`` carry the factor
``σ_w / √n_in`` and the NTK has a finite limit as the width grows.

Contract for code that recognises layers by type (the structured kernel engine):

- ``NTKLinear``, ``NTKConv1d`` and ``NTKConv2d`` subclass ``nn.Linear``, ``nn.Conv1d`` and ``nn.Conv2d``;
  ``weight`` and ``bias`` have the usual shapes, and the input a forward hook sees is the layer input ``a``.
- Their forward pass is exactly the parent's with ``weight * weight_scale`` and ``bias * bias_scale``,
  two plain ``float`` attributes. Hence ``∂z/∂W = weight_scale · (∂z/∂W of the plain layer)`` and
  ``∂z/∂b = bias_scale · (∂z/∂b of the plain layer)``.
- Plain torch layers carry no such attributes and mean a scale of ``1.0``; :func:`layer_scales` reads both
  cases.
"""

from __future__ import annotations

import math
from enum import Enum
from typing import Any, cast

import torch.nn.functional as F
from torch import Tensor, nn

#: Bias multiplier ``σ_b`` of the NTK parametrisation (the ``β = 0.1`` of Jacot et al.).
SIGMA_B = 0.1
#: He's ``σ_w = √2`` for layers feeding a ReLU, which keeps the second moment of pre-activations constant.
RELU_GAIN = math.sqrt(2.0)


class Parametrization(str, Enum):
    """How a layer's weights are initialised and scaled; ``"standard"``, ``"ntk"``, ``"torch"`` work too.

    - ``STANDARD``: plain torch layers, weights ``N(0, σ_w²/n_in)`` (He-scaled, ``σ_w² = 2`` before a
      ReLU), biases ``N(0, σ_b²)``.
    - ``NTK``: ``N(0, 1)`` parameters, output scaled by ``σ_w/√n_in`` and bias by ``σ_b`` in forward.
    - ``TORCH``: plain torch layers with PyTorch's default initialisation (weight variance ``1/(3 n_in)``).
    """

    STANDARD = "standard"
    NTK = "ntk"
    TORCH = "torch"

    @property
    def label(self) -> str:
        """How figures and reports name it, e.g. ``"standard param., He init."``."""
        return {"standard": "standard param., He init.", "ntk": "NTK param.", "torch": "PyTorch default init."}[
            self.value
        ]

    @classmethod
    def _missing_(cls, value: object) -> Parametrization:
        valid = ", ".join(repr(p.value) for p in cls)
        raise ValueError(f"unknown parametrization {value!r}; valid values: {valid}")


class _NTKScaled:
    """Mixin for a torch layer: ``N(0, 1)`` initialisation and the scales of the NTK parametrisation."""

    weight: Tensor
    bias: Tensor | None
    weight_scale: float
    bias_scale: float
    sigma_w: float
    sigma_b: float

    def _set_scales(self, fan_in: int, sigma_w: float, sigma_b: float) -> None:
        self.sigma_w = float(sigma_w)
        self.sigma_b = float(sigma_b)
        self.weight_scale = self.sigma_w / math.sqrt(fan_in)
        self.bias_scale = self.sigma_b

    def reset_parameters(self) -> None:
        """Draw every parameter from ``N(0, 1)``."""
        nn.init.normal_(self.weight)
        if self.bias is not None:
            nn.init.normal_(self.bias)

    def scaled_weight(self) -> Tensor:
        """The effective weight ``weight * weight_scale``."""
        return self.weight * self.weight_scale

    def scaled_bias(self) -> Tensor | None:
        """The effective bias ``bias * bias_scale``, or ``None`` for a layer without bias."""
        return None if self.bias is None else self.bias * self.bias_scale

    def extra_repr(self) -> str:
        parent = super().extra_repr()  # type: ignore[misc]
        return f"{parent}, sigma_w={self.sigma_w:g}, sigma_b={self.sigma_b:g}"


class NTKLinear(_NTKScaled, nn.Linear):  # type: ignore[misc]  # torch infers Linear.bias as Parameter, never None
    """``nn.Linear`` in NTK parametrisation: ``z = (σ_w/√in_features) W a + σ_b b``.

    Args:
        in_features: ``n_in``, size of the last input axis.
        out_features: size of the last output axis.
        bias: whether the layer has a bias.
        sigma_w: weight multiplier ``σ_w``.
        sigma_b: bias multiplier ``σ_b``.

    Shapes:
        input ``[*, in_features]`` → output ``[*, out_features]``.

    Example:
        >>> import torch
        >>> layer = NTKLinear(4, 3, sigma_w=2.0)
        >>> layer.weight_scale, layer.bias_scale
        (1.0, 0.1)
        >>> layer(torch.ones(5, 4)).shape
        torch.Size([5, 3])
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        bias: bool = True,
        *,
        sigma_w: float = 1.0,
        sigma_b: float = SIGMA_B,
    ) -> None:
        super().__init__(in_features, out_features, bias)
        self._set_scales(in_features, sigma_w, sigma_b)

    def forward(self, x: Tensor) -> Tensor:
        return F.linear(x, self.scaled_weight(), self.scaled_bias())


class NTKConv1d(_NTKScaled, nn.Conv1d):
    """``nn.Conv1d`` in NTK parametrisation, fan-in ``in_channels / groups × kernel_size``.

    Takes ``nn.Conv1d``'s arguments, then keyword-only ``sigma_w`` (default 1) and ``sigma_b``
    (default :data:`SIGMA_B`). Shapes: ``[B, C_in, L]`` → ``[B, C_out, L_out]``.
    """

    def __init__(self, *args: Any, sigma_w: float = 1.0, sigma_b: float = SIGMA_B, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._set_scales(self.weight[0].numel(), sigma_w, sigma_b)

    def forward(self, x: Tensor) -> Tensor:
        return self._conv_forward(x, self.scaled_weight(), self.scaled_bias())


class NTKConv2d(_NTKScaled, nn.Conv2d):
    """``nn.Conv2d`` in NTK parametrisation, fan-in ``in_channels / groups × kh × kw``.

    Takes ``nn.Conv2d``'s arguments, then keyword-only ``sigma_w`` (default 1) and ``sigma_b``
    (default :data:`SIGMA_B`). Shapes: ``[B, C_in, H, W]`` → ``[B, C_out, H_out, W_out]``.
    """

    def __init__(self, *args: Any, sigma_w: float = 1.0, sigma_b: float = SIGMA_B, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._set_scales(self.weight[0].numel(), sigma_w, sigma_b)

    def forward(self, x: Tensor) -> Tensor:
        return self._conv_forward(x, self.scaled_weight(), self.scaled_bias())


def layer_scales(module: nn.Module) -> tuple[float, float]:
    """The forward multipliers ``(weight_scale, bias_scale)`` of a layer; ``(1.0, 1.0)`` for plain torch layers.

    Example:
        >>> layer_scales(nn.Linear(4, 3))
        (1.0, 1.0)
        >>> layer_scales(NTKLinear(4, 3))
        (0.5, 0.1)
    """
    return float(getattr(module, "weight_scale", 1.0)), float(getattr(module, "bias_scale", 1.0))


def he_init_(layer: nn.Linear | nn.modules.conv._ConvNd, sigma_w: float, sigma_b: float = SIGMA_B) -> None:
    """Draw ``layer``'s weights ``N(0, σ_w²/n_in)`` and biases ``N(0, σ_b²)`` in place (standard param.).

    Example:
        >>> import torch
        >>> layer = nn.Linear(400, 300)
        >>> he_init_(layer, RELU_GAIN)
        >>> round(float(layer.weight.detach().var() * 400), 1)  # σ_w² = 2
        2.0
    """
    fan_in = layer.weight[0].numel()
    nn.init.normal_(layer.weight, std=sigma_w / math.sqrt(fan_in))
    if layer.bias is not None:
        nn.init.normal_(layer.bias, std=sigma_b)


def make_linear(
    in_features: int,
    out_features: int,
    *,
    bias: bool = True,
    parametrization: Parametrization | str = Parametrization.STANDARD,
    sigma_w: float = 1.0,
) -> nn.Linear:
    """A dense layer ``[*, in_features] → [*, out_features]`` in the given parametrisation.

    ``sigma_w`` applies to the standard (He-scaled) and NTK parametrisations; ``"torch"`` keeps PyTorch's
    default initialisation.
    """
    parametrization = Parametrization(parametrization)
    if parametrization is Parametrization.NTK:
        return NTKLinear(in_features, out_features, bias, sigma_w=sigma_w)
    layer = nn.Linear(in_features, out_features, bias)
    if parametrization is Parametrization.STANDARD:
        he_init_(layer, sigma_w)
    return layer


def make_conv(
    dim: int,
    in_channels: int,
    out_channels: int,
    kernel_size: int,
    *,
    stride: int = 1,
    padding: int = 0,
    bias: bool = True,
    parametrization: Parametrization | str = Parametrization.STANDARD,
    sigma_w: float = 1.0,
) -> nn.Conv1d | nn.Conv2d:
    """A ``dim``-dimensional convolution (1 or 2) in the given parametrisation.

    ``sigma_w`` applies to the standard (He-scaled) and NTK parametrisations; ``"torch"`` keeps PyTorch's
    default initialisation.
    """
    parametrization = Parametrization(parametrization)
    ntk = parametrization is Parametrization.NTK
    classes = {(1, False): nn.Conv1d, (1, True): NTKConv1d, (2, False): nn.Conv2d, (2, True): NTKConv2d}
    cls = classes.get((dim, ntk))
    if cls is None:
        raise ValueError(f"dim must be 1 (signals [B, C, L]) or 2 (images [B, C, H, W]), got {dim!r}")
    kwargs: dict[str, Any] = {"sigma_w": sigma_w} if ntk else {}
    layer = cls(in_channels, out_channels, kernel_size, stride=stride, padding=padding, bias=bias, **kwargs)
    if parametrization is Parametrization.STANDARD:
        he_init_(layer, sigma_w)
    return cast("nn.Conv1d | nn.Conv2d", layer)


def make_batch_norm(dim: int, num_features: int) -> nn.BatchNorm1d | nn.BatchNorm2d:
    """``BatchNorm1d`` or ``BatchNorm2d`` for ``dim`` 1 or 2; BatchNorm is never reparametrised."""
    if dim not in (1, 2):
        raise ValueError(f"dim must be 1 (signals [B, C, L]) or 2 (images [B, C, H, W]), got {dim!r}")
    return nn.BatchNorm1d(num_features) if dim == 1 else nn.BatchNorm2d(num_features)
