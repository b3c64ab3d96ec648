"""A loaded dataset, and the regression targets that the kernel experiments fit."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from pntk.data.normalize import Normalization


@dataclass(frozen=True, eq=False)
class Dataset:
    """Inputs and integer labels of one split of a dataset.

    Attributes:
        name: the dataset's name, e.g. ``"cifar10"``.
        split: ``"train"``, ``"test"`` or ``"all"``.
        x: ``[N, *input]`` float32 inputs: ``[N, C, H, W]`` images, ``[N, 1, L]`` signals, or ``[N, D]``
            when loaded flat.
        y: ``[N]`` int64 labels in ``0..num_classes-1``.
        num_classes: ``O``, the number of classes.
        indices: ``[N]`` int64, the rows of the split that these samples are, increasing (for ``"all"``,
            rows of the training split followed by the test split); ``None`` when not known.
        normalization: the map from the split's raw values to ``x``; ``None`` when not known.
    """

    name: str
    split: str
    x: Tensor
    y: Tensor
    num_classes: int
    indices: Tensor | None = None
    normalization: Normalization | None = None

    def __post_init__(self) -> None:
        if self.x.shape[0] != self.y.shape[0] or self.y.ndim != 1:
            raise ValueError(f"x {list(self.x.shape)} and y {list(self.y.shape)} must be [N, *input] and [N]")
        if self.indices is not None and self.indices.shape != self.y.shape:
            raise ValueError(f"indices {list(self.indices.shape)} must be [N] like y {list(self.y.shape)}")

    def __len__(self) -> int:
        return self.y.shape[0]

    def targets(self, *, center: bool = False, dtype: torch.dtype = torch.float32) -> Tensor:
        """One-hot regression targets of the labels; see :func:`one_hot_targets`.

        Returns:
            ``[N, O]``.
        """
        return one_hot_targets(self.y, self.num_classes, center=center, dtype=dtype)


def one_hot_targets(y: Tensor, num_classes: int, *, center: bool = False, dtype: torch.dtype = torch.float32) -> Tensor:
    """One-hot targets ``Y[n, a] = δ(a, y_n)``, or centred ``Y[n, a] = δ(a, y_n) − 1/O``.

    Centred targets sum to zero over the ``O`` outputs, like the outputs of a network whose output layer
    has zero-mean weights; kernel regression then fits no constant offset.

    Args:
        y: ``[N]`` integer labels in ``0..num_classes-1``.
        num_classes: ``O``.
        center: subtract ``1/O`` from every entry.
        dtype: the floating type of the result.

    Returns:
        ``[N, O]``.

    Raises:
        ValueError: a label outside ``0..num_classes-1``.

    Example:
        >>> one_hot_targets(torch.tensor([2, 0]), 4, center=True)
        tensor([[-0.2500, -0.2500,  0.7500, -0.2500],
                [ 0.7500, -0.2500, -0.2500, -0.2500]])
    """
    if y.numel() and (int(y.min()) < 0 or int(y.max()) >= num_classes):
        raise ValueError(f"labels must lie in 0..{num_classes - 1}, got {int(y.min())}..{int(y.max())}")
    targets = torch.nn.functional.one_hot(y.long(), num_classes).to(dtype)
    return targets - 1.0 / num_classes if center else targets
