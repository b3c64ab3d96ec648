"""Small networks that exercise every part of the kernel code, with inputs to match.

Each case is ``(model, make_inputs)`` where ``make_inputs(n, generator)`` returns ``[n, ...]`` inputs (a
tensor, or a tuple for multi-input models). Models are in eval mode, with non-trivial BatchNorm statistics.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn


class Residual(nn.Module):
    """``x + conv(relu(conv(x)))`` then a linear read-out."""

    def __init__(self, c: int = 3, out: int = 4):
        super().__init__()
        self.conv1 = nn.Conv2d(c, c, 3, padding=1)
        self.conv2 = nn.Conv2d(c, c, 3, padding=1, bias=False)
        self.head = nn.Linear(c * 16, out)

    def forward(self, x):
        x = x + self.conv2(torch.relu(self.conv1(x)))
        return self.head(x.flatten(1))


class Shared(nn.Module):
    """One hidden layer applied twice: its gradient sums over the two calls."""

    def __init__(self, width: int = 6, out: int = 3):
        super().__init__()
        self.inp = nn.Linear(4, width)
        self.hidden = nn.Linear(width, width)
        self.out = nn.Linear(width, out)

    def forward(self, x):
        h = torch.tanh(self.inp(x))
        h = torch.tanh(self.hidden(h))
        h = torch.tanh(self.hidden(h))
        return self.out(h)


class TwoInputs(nn.Module):
    """A model of two tensors ``(x [n, 4], z [n, 2, 3])``."""

    def __init__(self, out: int = 3):
        super().__init__()
        self.fx = nn.Linear(4, 5)
        self.fz = nn.Linear(6, 5)
        self.head = nn.Linear(5, out)

    def forward(self, x, z):
        return self.head(torch.tanh(self.fx(x) + self.fz(z.flatten(1))))


def mlp(out: int) -> nn.Module:
    return nn.Sequential(nn.Linear(5, 8), nn.Tanh(), nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, out))


def cnn() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(2, 4, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(4, 4, 3, stride=1, padding=1),
        nn.ReLU(),
        nn.AvgPool2d(2),
        nn.Flatten(),
        nn.Linear(4 * 2 * 2, 3),
    )


def batchnorm() -> nn.Module:
    net = nn.Sequential(
        nn.Conv2d(2, 4, 3, padding=1),
        nn.BatchNorm2d(4),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(4 * 8 * 8, 6),
        nn.BatchNorm1d(6),
        nn.Linear(6, 3),
    )
    g = torch.Generator().manual_seed(1)
    for m in net.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.3)
            m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            nn.init.uniform_(m.weight, 0.5, 1.5)
            nn.init.uniform_(m.bias, -0.5, 0.5)
    return net


def norms() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(2, 4, 3, padding=1),
        nn.GroupNorm(2, 4),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(4 * 4 * 4, 6),
        nn.LayerNorm(6),
        nn.Tanh(),
        nn.Linear(6, 3),
    )


def _images(c: int, h: int):
    return lambda n, g: torch.randn(n, c, h, h, generator=g)


def _vectors(d: int):
    return lambda n, g: torch.randn(n, d, generator=g)


CASES: dict[str, Callable[[], tuple[nn.Module, Callable]]] = {
    "mlp": lambda: (mlp(4), _vectors(5)),
    "mlp_O1": lambda: (mlp(1), _vectors(5)),
    "mlp_O10": lambda: (mlp(10), _vectors(5)),
    "cnn_pool": lambda: (cnn(), _images(2, 8)),
    "residual": lambda: (Residual(), _images(3, 4)),
    "batchnorm_eval": lambda: (batchnorm(), _images(2, 8)),
    "group_layer_norm": lambda: (norms(), _images(2, 4)),
    "shared_layer": lambda: (Shared(), _vectors(4)),
    "two_inputs": lambda: (
        TwoInputs(),
        lambda n, g: (torch.randn(n, 4, generator=g), torch.randn(n, 2, 3, generator=g)),
    ),
}


def make_case(name: str, seed: int = 0):
    """The model (eval mode) and input factory of a zoo case, initialised from ``seed``."""
    torch.manual_seed(seed)
    model, make_inputs = CASES[name]()
    return model.eval(), make_inputs
