"""ResNet-18 (CIFAR stem): parameter counts, shapes on every input kind, eval-mode sample independence."""

import pytest
import torch
from torch import nn

from pntk.models import RELU_GAIN, NTKConv1d, NTKConv2d, NTKLinear, ResNet18


def _num_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def _expected_params(w: int, channels: int, classes: int, dim: int) -> int:
    """Count by hand: ``k = 3^dim``-tap convolutions give 298·k·w² in the blocks and ``k·C·w`` in the stem,
    the 1-wide skips 42·w², BatchNorm 150·w, the readout (8w + 1)·classes."""
    k = 3**dim
    return (298 * k + 42) * w * w + (k * channels + 150 + 8 * classes) * w + classes


def test_standard_width_has_the_usual_count():
    assert _num_params(ResNet18(10)) == 11_173_962 == _expected_params(64, 3, 10, 2)


@pytest.mark.parametrize("parametrization", ["standard", "ntk"])
@pytest.mark.parametrize(("w", "channels", "classes", "dim"), [(2, 3, 10, 2), (5, 1, 100, 2), (4, 1, 10, 1)])
def test_parameter_count_formula(w, channels, classes, dim, parametrization):
    model = ResNet18(classes, in_channels=channels, base_width=w, dim=dim, parametrization=parametrization)
    assert _num_params(model) == _expected_params(w, channels, classes, dim)


@pytest.mark.parametrize("parametrization", ["standard", "ntk"])
def test_output_shape_on_every_input_kind(in_shape, parametrization):
    dim = len(in_shape) - 1
    model = ResNet18(5, in_channels=in_shape[0], base_width=4, dim=dim, parametrization=parametrization)
    assert model.eval()(torch.randn(3, *in_shape)).shape == (3, 5)


def test_layout():
    model = ResNet18(10, base_width=4)
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    assert len(convs) == 1 + 16 + 3  # stem, two per block, three projecting skips
    assert all(c.bias is None for c in convs)
    assert [c.out_channels for c in convs if c.kernel_size == (1, 1)] == [8, 16, 32]
    assert model.readout.in_features == 32


@pytest.mark.parametrize(("dim", "conv_type"), [(1, NTKConv1d), (2, NTKConv2d)])
def test_ntk_parametrisation_reaches_every_conv_and_the_readout(dim, conv_type):
    model = ResNet18(10, base_width=4, dim=dim, parametrization="ntk")
    convs = [m for m in model.modules() if isinstance(m, (nn.Conv1d, nn.Conv2d))]
    assert len(convs) == 20 and all(type(c) is conv_type for c in convs)
    assert all(c.sigma_w == RELU_GAIN for c in convs)
    assert type(model.readout) is NTKLinear and model.readout.sigma_w == 1.0
    assert sum(isinstance(m, nn.BatchNorm1d if dim == 1 else nn.BatchNorm2d) for m in model.modules()) == 20


def test_eval_mode_outputs_do_not_depend_on_the_batch():
    torch.manual_seed(0)
    model = ResNet18(10, in_channels=1, base_width=4).double().eval()
    x = torch.randn(4, 1, 8, 8, dtype=torch.float64)
    torch.testing.assert_close(model(x)[1:2], model(x[1:2]), rtol=1e-12, atol=1e-12)
    # In training mode BatchNorm uses batch statistics, so a sample's output depends on its batch.
    model.train()
    assert not torch.allclose(model(x)[1:2], model(x[1:3])[:1])
