"""Myrtle ConvNet: stage layout, parameter counts, shapes on every input kind, NTK output scale."""

import pytest
import torch
from torch import nn

from pntk.models import RELU_GAIN, ConvNet, NTKConv1d, NTKConv2d, NTKLinear, stage_depths


def _num_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize(
    ("depth", "stages"), [(4, (1, 1, 1)), (5, (2, 1, 1)), (7, (2, 2, 2)), (8, (3, 2, 2)), (10, (3, 3, 3))]
)
def test_stage_depths(depth, stages):
    assert stage_depths(depth) == stages


@pytest.mark.parametrize("depth", [5, 10])
def test_layer_layout(depth):
    model = ConvNet(3, width=8, depth=depth)
    kinds = [type(m).__name__ for m in model.features]
    convs = [i for i, k in enumerate(kinds) if k == "Conv2d"]
    pools = [i for i, k in enumerate(kinds) if k == "AvgPool2d"]

    assert len(convs) == depth - 1
    assert kinds.count("ReLU") == depth - 1
    # A pool closes each of the first two stages.
    s1, s2, _ = stage_depths(depth)
    assert pools == [2 * s1, 2 * s1 + 1 + 2 * s2]


@pytest.mark.parametrize("parametrization", ["standard", "ntk"])
def test_output_shape_on_every_input_kind(in_shape, parametrization):
    dim = len(in_shape) - 1
    model = ConvNet(in_shape[0], width=8, depth=5, out_features=7, dim=dim, parametrization=parametrization)
    assert model(torch.randn(3, *in_shape)).shape == (3, 7)


@pytest.mark.parametrize(
    ("dim", "channels", "width", "depth", "out"), [(2, 3, 8, 5, 10), (1, 1, 5, 7, 2), (2, 1, 16, 4, 3)]
)
def test_parameter_count_formula(dim, channels, width, depth, out):
    k = 3**dim
    expected = (k * channels + 1) * width + (depth - 2) * (k * width + 1) * width + (width + 1) * out
    assert _num_params(ConvNet(channels, width, depth, out, dim=dim)) == expected
    assert _num_params(ConvNet(channels, width, depth, out, dim=dim, parametrization="ntk")) == expected
    no_bias = ConvNet(channels, width, depth, out, dim=dim, bias=False)
    assert _num_params(no_bias) == expected - (depth - 1) * width - out


@pytest.mark.parametrize(("dim", "conv_type"), [(1, NTKConv1d), (2, NTKConv2d)])
def test_ntk_layers_and_multipliers(dim, conv_type):
    model = ConvNet(2, width=6, depth=5, dim=dim, parametrization="ntk")
    convs = [m for m in model.modules() if isinstance(m, conv_type)]

    assert len(convs) == 4
    fan_ins = [2 * 3**dim] + 3 * [6 * 3**dim]
    assert [c.weight_scale for c in convs] == pytest.approx([RELU_GAIN / n**0.5 for n in fan_ins])
    assert isinstance(model.readout, NTKLinear) and model.readout.weight_scale == pytest.approx(6**-0.5)


def _mean_square_output(width: int) -> float:
    """``E[f_a(x)²]`` of NTK Myrtle-5 over 32 seeds, 10 outputs and 8 random 8×8 images."""
    x = torch.randn(8, 1, 8, 8, generator=torch.Generator().manual_seed(7))
    total = 0.0
    for seed in range(32):
        torch.manual_seed(seed)
        with torch.no_grad():
            total += ConvNet(1, width, 5, 10, parametrization="ntk")(x).square().mean().item()
    return total / 32


def test_ntk_output_scale_is_independent_of_width():
    # Global pooling makes the outputs of one network strongly correlated across inputs, so each network
    # contributes a few samples: 32 networks estimate E[f²] (≈ 0.08 here) to about ±12%.
    narrow, wide = _mean_square_output(16), _mean_square_output(64)
    assert 0.03 < narrow < 0.3 and 0.03 < wide < 0.3
    assert 0.5 < wide / narrow < 2.0


def test_spatial_sizes_are_halved_twice_then_pooled():
    model = ConvNet(3, width=4, depth=5)
    assert model.features(torch.zeros(1, 3, 32, 32)).shape == (1, 4, 8, 8)
    model = ConvNet(1, width=4, depth=5, dim=1)
    assert model.features(torch.zeros(1, 1, 40)).shape == (1, 4, 10)


def test_invalid_arguments():
    with pytest.raises(ValueError, match=r"must be >= 4, got 3"):
        ConvNet(3, 8, depth=3)
    with pytest.raises(ValueError, match=r"dim must be 1 .* or 2 .*, got 3"):
        ConvNet(3, 8, dim=3)
