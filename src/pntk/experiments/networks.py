"""What the experiments run on: stratified data subsets and freshly initialised zoo models."""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

import torch
from torch import nn

from ..data import Dataset, load_dataset
from ..models import build_model
from ..training import Loss


def load_split(
    dataset: str, *, split: str, N: int | None, seed: int = 0, data_root: str | Path | None, device: str
) -> Dataset:
    """A stratified subset of ``N`` samples of one split drawn with ``seed``, on ``device``.

    See :func:`pntk.data.load_dataset`; different seeds give different input sets.
    """
    data = load_dataset(dataset, data_root, split=split, n=N, seed=seed)
    return Dataset(data.name, data.split, data.x.to(device), data.y.to(device), data.num_classes)


class ModelSpec(Protocol):
    """What an experiment's spec says of its networks."""

    @property
    def model(self) -> str: ...

    @property
    def depth(self) -> int | None: ...

    @property
    def parametrization(self) -> str: ...


def spec_model(spec: ModelSpec, *, width: int, seed: int, data: Dataset, device: str) -> nn.Module:
    """The zoo model ``spec`` names (its model, depth and parametrization) at one width and seed."""
    return make_model(
        spec.model,
        width=width,
        depth=spec.depth,
        data=data,
        parametrization=spec.parametrization,
        seed=seed,
        device=device,
    )


def make_model(
    name: str,
    *,
    width: int,
    depth: int | None,
    data: Dataset,
    parametrization: str,
    seed: int,
    device: str,
    num_classes: int | None = None,
) -> nn.Module:
    """A freshly initialised zoo model for ``data``'s inputs, on ``device``, in eval mode.

    Args:
        name: a zoo name (``"mlp"``, ``"convnet"``, ``"resnet18"``, ``"wrn"``).
        width: the model's width.
        depth: the model's depth; ``None`` for its default.
        data: the inputs the model reads (their shape) and its number of classes ``O``.
        parametrization: ``"standard"`` (He-scaled), ``"ntk"`` or ``"torch"`` (see :mod:`pntk.models.layers`).
        seed: the initialisation seed.
        device: where the model lives.
        num_classes: ``O`` instead of the dataset's (the timing experiment varies it).
    """
    model = build_model(
        name,
        width=width,
        depth=depth,
        in_shape=tuple(data.x.shape[1:]),
        num_classes=num_classes or data.num_classes,
        parametrization=parametrization,
        seed=seed,
    )
    return model.to(device).eval()


def num_parameters(model: nn.Module) -> int:
    """``P``, the number of trainable parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def training_targets(data: Dataset, loss: Loss) -> torch.Tensor:
    """What the network fits: centred one-hot ``[N, O]`` for the squared loss, labels ``[N]`` otherwise."""
    return data.targets(center=True) if loss is Loss.MSE else data.y


@torch.no_grad()
def accuracy(model: nn.Module, data: Dataset) -> float:
    """The fraction of ``data`` whose largest output is its label."""
    return float((model(data.x).argmax(-1) == data.y).double().mean())
