"""MLP: parameter counts, shapes, and the width-independent scale of the NTK parametrisation."""

import math

import pytest
import torch
from torch import nn

from pntk.models import MLP, RELU_GAIN, NTKLinear, layer_scales


def _num_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("parametrization", ["standard", "ntk"])
@pytest.mark.parametrize(("n_in", "width", "depth", "n_out"), [(64, 32, 2, 10), (40, 7, 3, 3), (5, 100, 1, 1)])
def test_parameter_count_formula(n_in, width, depth, n_out, parametrization):
    with_bias = MLP(n_in, width, depth, n_out, parametrization=parametrization)
    without = MLP(n_in, width, depth, n_out, parametrization=parametrization, bias=False)

    assert _num_params(with_bias) == (n_in + 1) * width + (depth - 1) * (width + 1) * width + (width + 1) * n_out
    assert _num_params(without) == n_in * width + (depth - 1) * width * width + width * n_out


def test_depth_zero_is_a_linear_model():
    model = MLP(12, width=50, depth=0, out_features=4)
    x = torch.randn(3, 12)
    assert _num_params(model) == 13 * 4
    torch.testing.assert_close(model(x), x @ model.layers[0].weight.T + model.layers[0].bias)


def test_any_input_shape_is_flattened(in_shape):
    model = MLP(math.prod(in_shape), width=16, depth=2, out_features=10)
    x = torch.randn(5, *in_shape)
    out = model(x)
    assert out.shape == (5, 10)
    torch.testing.assert_close(out, model(x.reshape(5, -1)), rtol=0, atol=0)


@pytest.mark.parametrize(
    ("activation", "module", "gain"),
    [
        ("relu", nn.ReLU, RELU_GAIN),
        ("gelu", nn.GELU, RELU_GAIN),
        ("tanh", nn.Tanh, 5 / 3),
        ("identity", nn.Identity, 1.0),
    ],
)
def test_activations_and_their_ntk_gains(activation, module, gain):
    model = MLP(9, 16, 3, 2, activation=activation, parametrization="ntk")
    dense = [m for m in model.modules() if isinstance(m, NTKLinear)]

    assert sum(isinstance(m, module) for m in model.modules()) == 3
    assert [m.sigma_w for m in dense] == pytest.approx([gain, gain, gain, 1.0])
    assert [layer_scales(m)[0] for m in dense] == pytest.approx([gain / 3, gain / 4, gain / 4, 1 / 4])


def _mean_square_output(width: int, parametrization: str) -> float:
    """``E[f_a(x)²]`` over 4 seeds, 10 outputs and 256 inputs ``x ~ N(0, I_64)``."""
    x = torch.randn(256, 64, generator=torch.Generator().manual_seed(123))
    total = 0.0
    for seed in range(4):
        torch.manual_seed(seed)
        with torch.no_grad():
            total += MLP(64, width, 2, 10, parametrization=parametrization)(x).square().mean().item()
    return total / 4


def test_ntk_output_scale_is_order_one_at_every_width():
    # Infinite width, x ~ N(0, I): q1 = 2·1 + σ_b² = 2.01, q2 = 2·(q1/2) + σ_b² = 2.02 and
    # E[f²] = q2/2 + σ_b² ≈ 1.02. Four networks of 10 outputs estimate it to about ±20%.
    narrow, wide = _mean_square_output(32, "ntk"), _mean_square_output(1024, "ntk")
    assert 0.6 < narrow < 1.6
    assert 0.6 < wide < 1.6
    assert 0.5 < wide / narrow < 2.0


def test_ntk_weights_stay_standard_normal_while_standard_weights_shrink_with_width():
    torch.manual_seed(0)
    stds = {
        (p, w): MLP(8, w, 2, 1, parametrization=p).layers[2].weight.std().item()
        for p in ("standard", "ntk")
        for w in (64, 1024)
    }
    assert stds["ntk", 64] == pytest.approx(1.0, abs=0.05)
    assert stds["ntk", 1024] == pytest.approx(1.0, abs=0.01)
    assert stds["standard", 64] / stds["standard", 1024] == pytest.approx(4.0, rel=0.05)


def test_ntk_mlp_equals_standard_mlp_with_scaled_weights():
    torch.manual_seed(0)
    ntk = MLP(10, 20, 2, 3, activation="tanh", parametrization="ntk").double()
    plain = MLP(10, 20, 2, 3, activation="tanh").double()
    with torch.no_grad():
        for a, b in zip(ntk.layers, plain.layers):
            if isinstance(a, nn.Linear):
                weight_scale, bias_scale = layer_scales(a)
                b.weight.copy_(a.weight * weight_scale)
                b.bias.copy_(a.bias * bias_scale)
    x = torch.randn(6, 10, dtype=torch.float64)
    torch.testing.assert_close(ntk(x), plain(x), rtol=0, atol=0)


def test_invalid_arguments():
    with pytest.raises(ValueError, match=r"unknown activation 'swish'; valid values: 'relu', 'gelu', 'tanh'"):
        MLP(3, 4, 1, 2, activation="swish")
    with pytest.raises(ValueError, match=r"depth .* must be >= 0, got -1"):
        MLP(3, 4, -1, 2)
