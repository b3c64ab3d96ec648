"""The benchmark architectures, defined once and built both in PyTorch and in ``neural_tangents.stax``.

Each workload is a small architecture description (a list of layer specs) from which :func:`build_torch`
and :func:`build_stax` build networks of identical shapes and parameter counts, layer for layer and in the
same parameter order, so that their kernels cost the same and, with transferred weights
(:func:`stax_params_from_torch`), are the same numbers.

Choices that keep the two sides identical:

- **Standard parameterisation.** Every stax layer uses ``parameterization='standard'``, i.e. a PyTorch-style
  layer ``x W + b``; the initial weight distributions still differ (stax draws ``N(0, W_std²/fan_in)``,
  PyTorch a Kaiming-uniform), so kernels of independently initialised networks differ in value, not in
  cost. Timings compare freely; values are compared only after transferring PyTorch's weights.
- **No BatchNorm.** stax has no BatchNorm, so ResNet-18 and the WideResNet are built without it (each
  convolution is followed directly by its ReLU; convolutions carry no bias, as in the usual ResNet, the
  readout does). The usual ResNet-18 with BatchNorm in eval mode adds only a per-channel affine map.
- **SAME padding.** stax pads a strided 3×3 convolution of an even input by (0, 1), PyTorch's ``padding=1``
  by (1, 1); the PyTorch side pads explicitly by (0, 1) (a ``ZeroPad2d``), so the values agree exactly.
  Stride-1 convolutions use ``padding=k // 2``, which is SAME for odd ``k``.
- **Layouts.** PyTorch images are ``[N, C, H, W]`` and kernels ``[out, in, kh, kw]``; stax uses NHWC and
  HWIO: :func:`stax_input` and :func:`stax_params_from_torch` convert.

This module imports ``torch`` (present in both virtual environments) and imports ``neural_tangents`` only
inside :func:`build_stax` and :func:`stax_params_from_torch`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

# A layer spec is a tuple: ("dense", out, bias) | ("conv", out, k, stride, bias) | ("relu",) |
# ("avgpool", k) | ("gap",) | ("flatten",) | ("residual", main_specs, shortcut_specs)
Spec = tuple


@dataclass(frozen=True)
class Workload:
    """One benchmark architecture.

    Attributes:
        name: the key in :data:`WORKLOADS`.
        description: one line for tables and the README.
        in_shape: one PyTorch sample, ``(784,)`` or ``(C, H, W)``.
        num_outputs: ``O``.
        layers: the architecture as layer specs.
    """

    name: str
    description: str
    in_shape: tuple[int, ...]
    num_outputs: int
    layers: tuple[Spec, ...]


def _mlp(widths: Sequence[int], num_outputs: int) -> tuple[Spec, ...]:
    layers: list[Spec] = [("flatten",)]
    for w in widths:
        layers += [("dense", w, True), ("relu",)]
    return (*layers, ("dense", num_outputs, True))


def _convnet(c1: int, c2: int, num_outputs: int) -> tuple[Spec, ...]:
    """conv c1 → conv c1 → pool → conv c2 → pool → conv c2 → global average pool → dense."""
    conv = lambda c: [("conv", c, 3, 1, True), ("relu",)]  # noqa: E731
    return (
        *conv(c1), *conv(c1), ("avgpool", 2),
        *conv(c2), ("avgpool", 2),
        *conv(c2), ("gap",), ("dense", num_outputs, True),
    )  # fmt: skip


def _basic_block(c_in: int, c_out: int, stride: int) -> tuple[Spec, ...]:
    """ResNet basic block without BatchNorm: ``relu(conv(relu(conv(x))) + shortcut(x))``."""
    main = (("conv", c_out, 3, stride, False), ("relu",), ("conv", c_out, 3, 1, False))
    shortcut = () if stride == 1 and c_in == c_out else (("conv", c_out, 1, stride, False),)
    return (("residual", main, shortcut), ("relu",))


def _resnet18(w: int, num_outputs: int) -> tuple[Spec, ...]:
    """ResNet-18 with the CIFAR stem (3×3 stride-1 convolution, no max-pool), without BatchNorm."""
    layers: list[Spec] = [("conv", w, 3, 1, False), ("relu",)]
    c = w
    for c_out, stride in ((w, 1), (2 * w, 2), (4 * w, 2), (8 * w, 2)):
        for s in (stride, 1):
            layers += _basic_block(c, c_out, s)
            c = c_out
    return (*layers, ("gap",), ("dense", num_outputs, True))


def _pre_act_block(c_in: int, c_out: int, stride: int) -> tuple[Spec, ...]:
    """WideResNet block without BatchNorm: ``conv(relu(conv(relu(x)))) + shortcut(x)``."""
    main = (("relu",), ("conv", c_out, 3, stride, False), ("relu",), ("conv", c_out, 3, 1, False))
    shortcut = () if stride == 1 and c_in == c_out else (("conv", c_out, 1, stride, False),)
    return (("residual", main, shortcut),)


def _wrn(depth: int, k: int, num_outputs: int) -> tuple[Spec, ...]:
    """WRN-depth-k (Zagoruyko & Komodakis) for CIFAR, pre-activation blocks, without BatchNorm."""
    n = (depth - 4) // 6
    layers: list[Spec] = [("conv", 16, 3, 1, False)]
    c = 16
    for c_out, stride in ((16 * k, 1), (32 * k, 2), (64 * k, 2)):
        for i in range(n):
            layers += _pre_act_block(c, c_out, stride if i == 0 else 1)
            c = c_out
    return (*layers, ("relu",), ("gap",), ("dense", num_outputs, True))


CIFAR = (3, 32, 32)

#: The workloads by name.
WORKLOADS: dict[str, Workload] = {
    w.name: w
    for w in [
        Workload("mlp", "MLP 784-1024-1024-1024-10, ReLU", (784,), 10, _mlp([1024, 1024, 1024], 10)),
        Workload(
            "convnet", "ConvNet 4×conv3×3 (64,64,128,128), 2 avg-pools, GAP, dense 10; 32×32×3",
            CIFAR, 10, _convnet(64, 128, 10),
        ),
        Workload("resnet18-16", "ResNet-18, CIFAR stem, base width 16, no BatchNorm", CIFAR, 10, _resnet18(16, 10)),
        Workload("resnet18-64", "ResNet-18, CIFAR stem, base width 64, no BatchNorm", CIFAR, 10, _resnet18(64, 10)),
        Workload("wrn", "WRN-16-2, pre-activation, no BatchNorm", CIFAR, 10, _wrn(16, 2, 10)),
    ]
}  # fmt: skip


def small_workload(name: str, **sizes: int) -> Workload:
    """Size-parametrised variants for quick runs and the core benchmark.

    ``small_workload("mlp", width=256, depth=2)`` or ``small_workload("convnet", width=16, hw=16)``
    (channels ``width`` and ``2·width`` on ``3 × hw × hw`` images).
    """
    if name == "mlp":
        width, depth, d_in = sizes.get("width", 256), sizes.get("depth", 2), sizes.get("d_in", 784)
        return Workload(
            f"mlp-w{width}",
            f"MLP {d_in}-{'-'.join([str(width)] * depth)}-10, ReLU",
            (d_in,),
            10,
            _mlp([width] * depth, 10),
        )
    if name == "convnet":
        width, hw = sizes.get("width", 16), sizes.get("hw", 16)
        return Workload(
            f"convnet-w{width}-{hw}px",
            f"ConvNet ({width},{width},{2 * width},{2 * width}) on 3×{hw}×{hw}",
            (3, hw, hw),
            10,
            _convnet(width, 2 * width, 10),
        )
    raise ValueError(f"no size-parametrised variant of {name!r}; use 'mlp' or 'convnet'")


def get_workload(name: str) -> Workload:
    """The workload called ``name``; raises ``ValueError`` listing the valid names."""
    if name not in WORKLOADS:
        raise ValueError(f"unknown workload {name!r}; valid workloads: {', '.join(WORKLOADS)}")
    return WORKLOADS[name]


# ------------------------------------------------------------------------------------------------ PyTorch


class Residual(nn.Module):
    """``main(x) + shortcut(x)``; an empty shortcut is the identity."""

    def __init__(self, main: nn.Module, shortcut: nn.Module) -> None:
        super().__init__()
        self.main = main
        self.shortcut = shortcut

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.main(x) + self.shortcut(x)


def _same_padding(size: int, k: int, stride: int) -> tuple[int, int]:
    """(low, high) padding of XLA's SAME convention along one axis."""
    out = -(-size // stride)
    total = max((out - 1) * stride + k - size, 0)
    return total // 2, total - total // 2


def _torch_layers(specs: Sequence[Spec], shape: list[int]) -> list[nn.Module]:
    """PyTorch modules for ``specs`` applied to one sample of ``shape`` (updated in place)."""
    modules: list[nn.Module] = []
    for spec in specs:
        op = spec[0]
        if op == "flatten":
            modules.append(nn.Flatten())
            shape[:] = [math.prod(shape)]
        elif op == "dense":
            modules.append(nn.Linear(shape[0], spec[1], bias=spec[2]))
            shape[:] = [spec[1]]
        elif op == "conv":
            _, c_out, k, stride, bias = spec
            c, h, w = shape
            if stride == 1:
                modules.append(nn.Conv2d(c, c_out, k, padding=k // 2, bias=bias))
            else:
                (top, bottom), (left, right) = _same_padding(h, k, stride), _same_padding(w, k, stride)
                if top or bottom or left or right:
                    modules.append(nn.ZeroPad2d((left, right, top, bottom)))
                modules.append(nn.Conv2d(c, c_out, k, stride=stride, bias=bias))
            shape[:] = [c_out, -(-h // stride), -(-w // stride)]
        elif op == "relu":
            modules.append(nn.ReLU())
        elif op == "avgpool":
            modules.append(nn.AvgPool2d(spec[1]))
            shape[:] = [shape[0], shape[1] // spec[1], shape[2] // spec[1]]
        elif op == "gap":
            modules.append(nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten()))
            shape[:] = [shape[0]]
        elif op == "residual":
            main_shape, short_shape = list(shape), list(shape)
            main = nn.Sequential(*_torch_layers(spec[1], main_shape))
            short = nn.Sequential(*_torch_layers(spec[2], short_shape)) if spec[2] else nn.Identity()
            assert main_shape == short_shape, (main_shape, short_shape)
            modules.append(Residual(main, short))
            shape[:] = main_shape
        else:
            raise ValueError(f"unknown layer spec {spec!r}")
    return modules


def build_torch(workload: Workload | str, *, seed: int = 0) -> nn.Module:
    """The PyTorch network of ``workload`` in eval mode, float32, PyTorch's default initialisation."""
    wl = get_workload(workload) if isinstance(workload, str) else workload
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = nn.Sequential(*_torch_layers(wl.layers, list(wl.in_shape)))
    return model.eval()


def sample_inputs(workload: Workload | str, n: int, *, seed: int = 0) -> torch.Tensor:
    """``[n, *in_shape]`` standard-normal inputs, reproducible from ``seed``."""
    wl = get_workload(workload) if isinstance(workload, str) else workload
    return torch.randn(n, *wl.in_shape, generator=torch.Generator().manual_seed(seed))


def num_params(model: nn.Module) -> int:
    """``P``, the number of trainable parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


@dataclass(frozen=True)
class LayerShape:
    """A layer ``z_t = W a_t + b`` applied at ``T`` positions per sample, ``a_t ∈ R^n``, ``z_t ∈ R^m``."""

    T: int
    n: int
    m: int
    bias: bool

    @property
    def forward_flops(self) -> int:
        """Multiply-adds ×2 of one sample's forward pass through the layer."""
        return 2 * self.T * self.n * self.m


def layer_shapes(model: nn.Module, in_shape: Sequence[int]) -> tuple[list[LayerShape], int]:
    """The dense and convolutional layers of ``model`` as :class:`LayerShape`, and the number of
    activations one sample's forward pass produces (the outputs of every leaf module)."""
    shapes: list[LayerShape] = []
    activations = [0]

    def hook(module: nn.Module, inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> None:
        activations[0] += output[0].numel()
        if isinstance(module, nn.Linear):
            shapes.append(LayerShape(1, module.in_features, module.out_features, module.bias is not None))
        elif isinstance(module, nn.Conv2d):
            T = output.shape[-2] * output.shape[-1]
            n = module.in_channels * math.prod(module.kernel_size)
            shapes.append(LayerShape(T, n, module.out_channels, module.bias is not None))

    leaves = [m for m in model.modules() if not list(m.children())]
    handles = [m.register_forward_hook(hook) for m in leaves]
    try:
        with torch.no_grad():
            model(torch.zeros(1, *in_shape))
    finally:
        for h in handles:
            h.remove()
    return shapes, activations[0]


# ------------------------------------------------------------------------------------------------ stax


def _stax_layers(specs: Sequence[Spec]) -> list[Any]:
    from neural_tangents import stax

    layers = []
    for spec in specs:
        op = spec[0]
        if op == "flatten":
            layers.append(stax.Flatten())
        elif op == "dense":
            layers.append(stax.Dense(spec[1], W_std=1.0, b_std=1.0 if spec[2] else None, parameterization="standard"))
        elif op == "conv":
            _, c_out, k, stride, bias = spec
            layers.append(
                stax.Conv(
                    c_out, (k, k), strides=(stride, stride), padding="SAME", W_std=1.0,
                    b_std=1.0 if bias else None, parameterization="standard",
                )
            )  # fmt: skip
        elif op == "relu":
            layers.append(stax.Relu())
        elif op == "avgpool":
            layers.append(stax.AvgPool((spec[1], spec[1]), strides=(spec[1], spec[1])))
        elif op == "gap":
            layers.append(stax.GlobalAvgPool())
        elif op == "residual":
            main = stax.serial(*_stax_layers(spec[1]))
            short = stax.serial(*_stax_layers(spec[2])) if spec[2] else stax.Identity()
            layers += [stax.FanOut(2), stax.parallel(main, short), stax.FanInSum()]
        else:
            raise ValueError(f"unknown layer spec {spec!r}")
    return layers


def build_stax(workload: Workload | str) -> tuple[Any, Any]:
    """``(init_fn, apply_fn)`` of the stax network of ``workload`` (NHWC images)."""
    from neural_tangents import stax

    wl = get_workload(workload) if isinstance(workload, str) else workload
    init_fn, apply_fn, _ = stax.serial(*_stax_layers(wl.layers))
    return init_fn, apply_fn


def stax_input_shape(workload: Workload | str) -> tuple[int, ...]:
    """One stax sample: ``(784,)`` or ``(H, W, C)``."""
    wl = get_workload(workload) if isinstance(workload, str) else workload
    s = wl.in_shape
    return s if len(s) == 1 else (s[1], s[2], s[0])


def stax_input(x: np.ndarray) -> np.ndarray:
    """PyTorch inputs ``[N, C, H, W]`` (or ``[N, D]``) in stax layout ``[N, H, W, C]``."""
    return x if x.ndim == 2 else np.ascontiguousarray(x.transpose(0, 2, 3, 1))


def torch_param_arrays(model: nn.Module) -> list[np.ndarray]:
    """The trainable parameters of ``model`` as NumPy arrays, in registration order."""
    return [p.detach().cpu().numpy() for p in model.parameters() if p.requires_grad]


def stax_params_from_torch(stax_params: Any, arrays: Sequence[np.ndarray]) -> Any:
    """``stax_params`` with every leaf replaced by the matching PyTorch parameter, in order.

    Dense weights ``[out, in]`` become ``[in, out]``, convolution kernels ``[out, in, kh, kw]`` become
    ``[kh, kw, in, out]``, biases take the broadcasting shape of their stax leaf. The two networks must come
    from the same :class:`Workload`; shapes are checked.
    """
    import jax

    leaves, treedef = jax.tree_util.tree_flatten(stax_params)
    if len(leaves) != len(arrays):
        raise ValueError(f"stax network has {len(leaves)} parameter tensors, PyTorch {len(arrays)}")
    new = []
    for leaf, a in zip(leaves, arrays):
        if a.ndim == 4:
            a = a.transpose(2, 3, 1, 0)
        elif a.ndim == 2:
            a = a.T
        else:
            a = a.reshape(leaf.shape)
        if tuple(a.shape) != tuple(leaf.shape):
            raise ValueError(f"shape mismatch: stax {leaf.shape} vs PyTorch {a.shape}")
        new.append(np.ascontiguousarray(a).astype(leaf.dtype))
    return jax.tree_util.tree_unflatten(treedef, new)
