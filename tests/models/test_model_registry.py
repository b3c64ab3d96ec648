"""build_model: every name on every input kind, what width and depth mean, seeds, errors."""

import math

import pytest
import torch
from torch import nn

from pntk.models import (
    DEFAULT_DEPTHS,
    MLP,
    ConvNet,
    ModelName,
    NTKConv1d,
    NTKConv2d,
    NTKLinear,
    ResNet18,
    WideBlock,
    WideResNet,
    build_model,
)

# Small widths: hidden units, channels, base width, widen factor.
WIDTHS = {"mlp": 16, "convnet": 8, "resnet18": 4, "wrn": 1}
DEPTHS = {"mlp": 2, "convnet": 5, "resnet18": None, "wrn": 10}
NTK_TYPES = (NTKLinear, NTKConv1d, NTKConv2d)


def _build(name: str, in_shape: tuple[int, ...], **kwargs) -> nn.Module:
    return build_model(name, width=WIDTHS[name], depth=DEPTHS[name], in_shape=in_shape, num_classes=3, **kwargs)


@pytest.mark.parametrize("parametrization", ["standard", "ntk"])
@pytest.mark.parametrize("name", list(WIDTHS))
def test_every_model_reads_every_input_kind(name, in_shape, parametrization):
    model = _build(name, in_shape, parametrization=parametrization, seed=0)
    assert model.training  # PyTorch's default; kernels call .eval() themselves
    out = model.eval()(torch.randn(2, *in_shape))
    assert out.shape == (2, 3)
    assert out.dtype == torch.float32 and torch.isfinite(out).all()


@pytest.mark.parametrize(
    ("name", "cls"), [("mlp", MLP), ("convnet", ConvNet), ("resnet18", ResNet18), ("wrn", WideResNet)]
)
def test_names_and_enum_members_build_the_same_class(name, cls):
    assert type(_build(name, (1, 8, 8))) is cls
    assert type(_build(ModelName(name), (1, 8, 8))) is cls


def test_what_width_means():
    mlp = build_model("mlp", width=24, in_shape=(1, 8, 8), num_classes=10)
    convnet = build_model("convnet", width=12, in_shape=(3, 32, 32), num_classes=10)
    resnet = build_model("resnet18", width=4, in_shape=(1, 40), num_classes=10)
    wrn = build_model("wrn", width=3, depth=10, in_shape=(3, 32, 32), num_classes=10)

    assert mlp.layers[0].weight.shape == (24, 64)
    assert convnet.features[0].weight.shape == (12, 3, 3, 3)
    assert resnet.stem[0].weight.shape == (4, 1, 3) and resnet.readout.in_features == 8 * 4
    assert wrn.readout.in_features == 64 * 3


def test_default_depths():
    assert DEFAULT_DEPTHS == {"mlp": 2, "convnet": 5, "resnet18": 18, "wrn": 16}
    mlp = build_model("mlp", width=4, in_shape=(10,), num_classes=2)
    convnet = build_model("convnet", width=4, in_shape=(1, 40), num_classes=2)
    wrn = build_model("wrn", width=1, in_shape=(1, 40), num_classes=2)

    assert sum(isinstance(m, nn.Linear) for m in mlp.modules()) == 3
    assert sum(isinstance(m, nn.Conv1d) for m in convnet.modules()) == 4
    assert sum(isinstance(m, WideBlock) for m in wrn.modules()) == 6


def test_mlp_reads_flat_inputs_of_any_rank():
    model = build_model("mlp", width=8, in_shape=(3, 4, 5), num_classes=2)
    assert model.layers[0].in_features == math.prod((3, 4, 5))


@pytest.mark.parametrize("name", list(WIDTHS))
def test_parametrization_selects_every_dense_and_conv_layer(name):
    ntk = _build(name, (3, 8, 8), parametrization="ntk")
    standard = _build(name, (3, 8, 8), parametrization="standard")
    layers = [m for m in ntk.modules() if isinstance(m, (nn.Linear, nn.Conv2d))]

    assert layers and all(isinstance(m, NTK_TYPES) for m in layers)
    assert not any(isinstance(m, NTK_TYPES) for m in standard.modules())


@pytest.mark.parametrize("name", list(WIDTHS))
def test_equal_seeds_give_identical_models_and_leave_the_global_state_alone(name):
    torch.manual_seed(1)
    state = torch.get_rng_state()
    a = _build(name, (1, 8, 8), seed=3).state_dict()
    b = _build(name, (1, 8, 8), seed=3).state_dict()
    c = _build(name, (1, 8, 8), seed=4).state_dict()

    assert torch.equal(torch.get_rng_state(), state)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not all(torch.equal(a[k], c[k]) for k in a)


def test_no_seed_draws_from_the_global_state():
    torch.manual_seed(5)
    a = build_model("mlp", width=8, in_shape=(4,), num_classes=2)
    b = build_model("mlp", width=8, in_shape=(4,), num_classes=2)
    c = build_model("mlp", width=8, in_shape=(4,), num_classes=2, seed=5)

    assert not torch.equal(a.layers[0].weight, b.layers[0].weight)
    # Seeding reproduces exactly what the global generator draws after the same seed.
    assert torch.equal(a.layers[0].weight, c.layers[0].weight)


def test_errors_name_the_valid_choices():
    kwargs = {"width": 4, "in_shape": (1, 8, 8), "num_classes": 2}
    with pytest.raises(ValueError, match=r"unknown model 'vit'; valid names: 'mlp', 'convnet', 'resnet18', 'wrn'"):
        build_model("vit", **kwargs)
    with pytest.raises(ValueError, match=r"unknown parametrization 'mup'; valid values: 'standard', 'ntk'"):
        build_model("mlp", parametrization="mup", **kwargs)
    with pytest.raises(ValueError, match=r"resnet18 has a fixed depth of 18; pass depth=None, got 34"):
        build_model("resnet18", depth=34, **kwargs)
    with pytest.raises(ValueError, match=r"width must be a positive integer, got 0"):
        build_model("mlp", **{**kwargs, "width": 0})
    with pytest.raises(ValueError, match=r"convnet is convolutional and needs in_shape \(C, L\) .* got \(64,\)"):
        build_model("convnet", **{**kwargs, "in_shape": (64,)})
    with pytest.raises(ValueError, match=r"WideResNet depth must be 6n \+ 4"):
        build_model("wrn", depth=12, **kwargs)
