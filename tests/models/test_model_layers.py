"""NTK-parametrised layers: the forward contract, the scales, the initialisation, the factories."""

import math

import pytest
import torch
from torch import nn

from pntk.models import (
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


def _plain_copy(layer: nn.Module, plain: nn.Module) -> nn.Module:
    """``plain`` with the effective parameters ``weight * weight_scale``, ``bias * bias_scale`` of ``layer``."""
    weight_scale, bias_scale = layer_scales(layer)
    with torch.no_grad():
        plain.weight.copy_(layer.weight * weight_scale)
        if layer.bias is not None:
            plain.bias.copy_(layer.bias * bias_scale)
    return plain


CASES = [
    (lambda: NTKLinear(7, 5, sigma_w=1.3), lambda: nn.Linear(7, 5), (4, 7), 1.3 / math.sqrt(7)),
    (lambda: NTKLinear(7, 5, bias=False), lambda: nn.Linear(7, 5, bias=False), (2, 3, 7), 1 / math.sqrt(7)),
    (
        lambda: NTKConv1d(3, 4, 5, stride=2, padding=2, sigma_w=2.0),
        lambda: nn.Conv1d(3, 4, 5, stride=2, padding=2),
        (2, 3, 11),
        2.0 / math.sqrt(3 * 5),
    ),
    (
        lambda: NTKConv2d(4, 6, 3, padding=1, groups=2, sigma_w=math.sqrt(2)),
        lambda: nn.Conv2d(4, 6, 3, padding=1, groups=2),
        (2, 4, 5, 6),
        math.sqrt(2) / math.sqrt(2 * 9),
    ),
    (
        lambda: NTKConv2d(3, 2, (3, 1), bias=False, padding_mode="circular", padding=1),
        lambda: nn.Conv2d(3, 2, (3, 1), bias=False, padding_mode="circular", padding=1),
        (1, 3, 4, 4),
        1 / math.sqrt(3 * 3),
    ),
]
IDS = ["linear", "linear-nobias-3d", "conv1d-stride", "conv2d-groups", "conv2d-circular-nobias"]


@pytest.mark.parametrize(("make_ntk", "make_plain", "x_shape", "weight_scale"), CASES, ids=IDS)
def test_ntk_layer_is_plain_layer_with_scaled_parameters(make_ntk, make_plain, x_shape, weight_scale):
    layer = make_ntk().double()
    plain = _plain_copy(layer, make_plain().double())
    x = torch.randn(x_shape, dtype=torch.float64, generator=torch.Generator().manual_seed(0))

    assert isinstance(layer, type(plain))
    assert [p.shape for p in layer.parameters()] == [p.shape for p in plain.parameters()]
    assert layer.weight_scale == pytest.approx(weight_scale, rel=1e-15)
    assert layer.bias_scale == SIGMA_B
    torch.testing.assert_close(layer(x), plain(x), rtol=0, atol=0)


@pytest.mark.parametrize(("make_ntk", "make_plain", "x_shape", "weight_scale"), CASES, ids=IDS)
def test_ntk_layer_gradients_carry_the_scales(make_ntk, make_plain, x_shape, weight_scale):
    # The structured kernel engine relies on dz/dW = weight_scale * (dz/dW of the plain layer).
    layer = make_ntk().double()
    plain = _plain_copy(layer, make_plain().double())
    x = torch.randn(x_shape, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    layer(x).square().sum().backward()
    plain(x).square().sum().backward()

    torch.testing.assert_close(layer.weight.grad, weight_scale * plain.weight.grad, rtol=1e-12, atol=0)
    if layer.bias is not None:
        torch.testing.assert_close(layer.bias.grad, SIGMA_B * plain.bias.grad, rtol=1e-12, atol=0)


def test_ntk_init_is_standard_normal_and_standard_init_shrinks_with_fan_in():
    torch.manual_seed(0)
    ntk = NTKLinear(1024, 256)
    plain = nn.Linear(1024, 256)

    assert ntk.weight.mean().item() == pytest.approx(0.0, abs=0.01)
    assert ntk.weight.std().item() == pytest.approx(1.0, abs=0.01)
    assert ntk.bias.std().item() == pytest.approx(1.0, abs=0.15)
    # PyTorch's default: U(-1/√n, 1/√n), standard deviation 1/√(3n).
    assert plain.weight.std().item() == pytest.approx(1 / math.sqrt(3 * 1024), rel=0.02)
    assert ntk.weight_scale == 1 / 32


def test_layer_scales_of_plain_layers_are_one():
    assert layer_scales(nn.Linear(3, 2)) == (1.0, 1.0)
    assert layer_scales(nn.Conv2d(3, 2, 3)) == (1.0, 1.0)
    assert layer_scales(NTKConv1d(2, 2, 2, sigma_w=4.0)) == (2.0, SIGMA_B)


def test_repr_shows_the_multipliers():
    assert repr(NTKLinear(4, 3, sigma_w=2.0)) == (
        "NTKLinear(in_features=4, out_features=3, bias=True, sigma_w=2, sigma_b=0.1)"
    )


@pytest.mark.parametrize("parametrization", ["standard", "ntk", Parametrization.STANDARD, Parametrization.NTK])
def test_factories_pick_the_layer_type(parametrization):
    ntk = Parametrization(parametrization) is Parametrization.NTK
    linear = make_linear(6, 3, parametrization=parametrization, sigma_w=3.0)
    conv1 = make_conv(1, 2, 4, 3, parametrization=parametrization)
    conv2 = make_conv(2, 2, 4, 3, stride=2, padding=1, bias=False, parametrization=parametrization)

    assert (type(linear), type(conv1), type(conv2)) == (
        (NTKLinear, NTKConv1d, NTKConv2d) if ntk else (nn.Linear, nn.Conv1d, nn.Conv2d)
    )
    assert layer_scales(linear)[0] == (3.0 / math.sqrt(6) if ntk else 1.0)
    assert (conv2.stride, conv2.padding, conv2.bias) == ((2, 2), (1, 1), None)


def test_make_batch_norm_by_dim():
    assert type(make_batch_norm(1, 5)) is nn.BatchNorm1d
    assert type(make_batch_norm(2, 5)) is nn.BatchNorm2d
    assert make_batch_norm(2, 5).num_features == 5


def test_invalid_values_are_named_with_the_valid_ones():
    with pytest.raises(ValueError, match=r"unknown parametrization 'mup'; valid values: 'standard', 'ntk'"):
        make_linear(3, 2, parametrization="mup")
    with pytest.raises(ValueError, match=r"dim must be 1 .* or 2 .*, got 3"):
        make_conv(3, 2, 2, 3)
    with pytest.raises(ValueError, match=r"dim must be 1 .* or 2 .*, got 3"):
        make_batch_norm(3, 2)


@pytest.mark.parametrize("dim", [0, 1, 2])
def test_standard_is_he_scaled_and_torch_is_pytorchs_default(dim):
    """Standard: weights N(0, σ_w²/n_in), biases N(0, σ_b²); torch: U(±1/√n_in), variance 1/(3 n_in)."""
    from pntk.models.layers import RELU_GAIN

    def build(parametrization):
        torch.manual_seed(0)
        if dim == 0:
            return make_linear(512, 256, parametrization=parametrization, sigma_w=RELU_GAIN)
        return make_conv(dim, 64, 128, 3, parametrization=parametrization, sigma_w=RELU_GAIN)

    fan_in = 512 if dim == 0 else 64 * 3**dim
    standard, default = build("standard"), build("torch")
    assert type(standard) is type(default)  # plain torch layers, no forward scale
    assert standard.weight.var().item() * fan_in == pytest.approx(2.0, rel=0.03)
    assert standard.bias.std().item() == pytest.approx(SIGMA_B, rel=0.2)
    assert default.weight.var().item() * fan_in == pytest.approx(1 / 3, rel=0.03)
    assert Parametrization("standard").label != Parametrization("torch").label


def test_he_scaled_relu_mlp_keeps_the_signal_where_pytorchs_default_shrinks_it():
    from pntk.models import MLP

    x = torch.randn(256, 200, generator=torch.Generator().manual_seed(0))
    ratios = {}
    for parametrization in ("standard", "torch", "ntk"):
        torch.manual_seed(1)
        hidden = MLP(200, 1024, 4, 10, parametrization=parametrization).layers[:-1]
        with torch.no_grad():
            ratios[parametrization] = hidden(x).pow(2).mean().item() / x.pow(2).mean().item()
    # He scaling: the second moment of ReLU outputs stays near that of the inputs (σ_w² = 2 cancels the half
    # a ReLU keeps); PyTorch's default loses about 6× per layer, 6⁴ ≈ 1300 after four.
    assert 0.5 < ratios["standard"] < 2 and 0.5 < ratios["ntk"] < 2
    assert ratios["torch"] < 1 / 500
