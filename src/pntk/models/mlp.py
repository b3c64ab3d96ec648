"""Fully connected network of constant hidden width."""

from __future__ import annotations

from collections.abc import Callable

from torch import Tensor, nn

from .layers import RELU_GAIN, Parametrization, make_linear

# Activation name -> (module factory, σ_w of the layer feeding it in NTK parametrisation). The gains keep
# the second moment of pre-activations constant with depth: He's √2 for ReLU (and GELU, which tends to ReLU
# for large inputs), PyTorch's 5/3 for tanh.
_ACTIVATIONS: dict[str, tuple[Callable[[], nn.Module], float]] = {
    "relu": (nn.ReLU, RELU_GAIN),
    "gelu": (nn.GELU, RELU_GAIN),
    "tanh": (nn.Tanh, 5.0 / 3.0),
    "identity": (nn.Identity, 1.0),
}


class MLP(nn.Module):
    """Multilayer perceptron ``in_features → width → … → width → out_features``.

    ``depth`` hidden layers of ``width`` units, each a dense layer followed by the activation, then a dense
    readout. With bias the number of parameters is

    .. math::

        P = (n_{\\mathrm{in}} + 1) w + (d - 1)(w + 1) w + (w + 1) O

    for ``depth = d ≥ 1``, and ``(n_in + 1) O`` for ``d = 0`` (a linear model). In NTK parametrisation the
    hidden layers use the activation's gain as ``σ_w`` and the readout ``σ_w = 1``.

    Args:
        in_features: ``n_in``, the number of input entries; inputs of any shape ``[B, *]`` are flattened.
        width: ``w``, the hidden width.
        depth: ``d ≥ 0``, the number of hidden layers.
        out_features: ``O``, the number of outputs.
        activation: ``"relu"``, ``"gelu"``, ``"tanh"`` or ``"identity"``.
        parametrization: ``"standard"`` or ``"ntk"`` (see :mod:`pntk.models.layers`).
        bias: whether every dense layer has a bias.

    Raises:
        ValueError: for an unknown activation or parametrisation, or a negative depth.

    Example:
        >>> import torch
        >>> model = MLP(64, width=32, depth=2, out_features=10)
        >>> model(torch.zeros(5, 8, 8)).shape
        torch.Size([5, 10])
        >>> sum(p.numel() for p in model.parameters())  # 65·32 + 33·32 + 33·10
        3466
    """

    def __init__(
        self,
        in_features: int,
        width: int,
        depth: int,
        out_features: int,
        *,
        activation: str = "relu",
        parametrization: Parametrization | str = Parametrization.STANDARD,
        bias: bool = True,
    ) -> None:
        super().__init__()
        if activation not in _ACTIVATIONS:
            valid = ", ".join(repr(a) for a in _ACTIVATIONS)
            raise ValueError(f"unknown activation {activation!r}; valid values: {valid}")
        if depth < 0:
            raise ValueError(f"depth (the number of hidden layers) must be >= 0, got {depth}")
        act, gain = _ACTIVATIONS[activation]
        sizes = [in_features] + [width] * depth
        layers: list[nn.Module] = []
        for n_in, n_out in zip(sizes[:-1], sizes[1:]):
            dense = make_linear(n_in, n_out, bias=bias, parametrization=parametrization, sigma_w=gain)
            layers += [dense, act()]
        layers.append(make_linear(sizes[-1], out_features, bias=bias, parametrization=parametrization))
        self.layers = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        """Map ``x: [B, *]`` (``n_in`` entries per sample) to ``[B, O]``."""
        return self.layers(x.flatten(1))
