"""WideResNet WRN-d-k: parameter counts, depth rule, shapes on every input kind, dropout."""

import pytest
import torch
from torch import nn

from pntk.models import NTKConv2d, NTKLinear, WideBlock, WideResNet


def _num_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize(("depth", "k", "count"), [(16, 4, 2_748_890), (16, 8, 10_961_370)])
def test_counts_of_the_reference_networks(depth, k, count):
    # Zagoruyko & Komodakis (2016), Table 4 on CIFAR-10: WRN-16-4 2.7M, WRN-16-8 11.0M parameters.
    assert _num_params(WideResNet(depth, k, 10)) == count


@pytest.mark.parametrize("depth", [10, 16])
def test_count_is_quadratic_in_widen_factor(depth):
    # From k = 2 on every group starts with a projecting skip, so P(k) is exactly quadratic in k.
    counts = [_num_params(WideResNet(depth, k, 10)) for k in range(2, 6)]
    second_differences = {counts[i + 2] - 2 * counts[i + 1] + counts[i] for i in range(2)}
    assert len(second_differences) == 1
    # Leading term: 9·(16² + 32² + 64²)·(2n − 1)·k² from the 3-wide convolutions of the n-block groups,
    # 9·(16·32 + 32·64)·k² more at the group changes, and 16·32 + 32·64 for the skips.
    n = (depth - 4) // 6
    a = 9 * (16**2 + 32**2 + 64**2) * (2 * n - 1) + 9 * (16 * 32 + 32 * 64) + (16 * 32 + 32 * 64)
    assert second_differences == {2 * a}


@pytest.mark.parametrize("parametrization", ["standard", "ntk"])
def test_output_shape_on_every_input_kind(in_shape, parametrization):
    model = WideResNet(10, 1, 6, in_channels=in_shape[0], dim=len(in_shape) - 1, parametrization=parametrization)
    assert model.eval()(torch.randn(3, *in_shape)).shape == (3, 6)


def test_layout():
    model = WideResNet(16, 2, 10)
    blocks = [m for m in model.modules() if isinstance(m, WideBlock)]
    assert len(blocks) == 6
    assert [b.conv2.out_channels for b in blocks] == [32, 32, 64, 64, 128, 128]
    assert [b.conv1.stride for b in blocks] == [(1, 1), (1, 1), (2, 2), (1, 1), (2, 2), (1, 1)]
    assert [b.skip is not None for b in blocks] == [True, False, True, False, True, False]
    assert model.readout.in_features == 128
    # With k = 1 the first group keeps 16 channels and stride 1: no projection.
    assert WideResNet(10, 1).blocks[0].skip is None


def test_ntk_parametrisation_reaches_every_conv_and_the_readout():
    model = WideResNet(10, 2, parametrization="ntk")
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    assert len(convs) == 1 + 3 * 2 + 3 and all(type(c) is NTKConv2d for c in convs)
    assert type(model.readout) is NTKLinear


def test_dropout_is_off_by_default_and_inactive_in_eval_mode():
    assert not any(isinstance(m, nn.Dropout) for m in WideResNet(16, 1).modules())
    torch.manual_seed(0)
    model = WideResNet(10, 1, in_channels=1, dropout=0.5)
    assert [m.p for m in model.modules() if isinstance(m, nn.Dropout)] == [0.5] * 3
    x = torch.randn(2, 1, 8, 8)
    model.eval()
    torch.testing.assert_close(model(x), model(x), rtol=0, atol=0)
    model.train()
    assert not torch.equal(model(x), model(x))


@pytest.mark.parametrize("depth", [4, 12, 15])
def test_depth_must_be_6n_plus_4(depth):
    with pytest.raises(ValueError, match=rf"depth must be 6n \+ 4 with n >= 1 .*, got {depth}"):
        WideResNet(depth, 1)
