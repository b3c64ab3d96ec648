"""Model inputs with a leading sample axis: one tensor, a tuple of tensors, or a dict of tensors."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

InputLike = Tensor | Sequence[Tensor] | Mapping[str, Tensor]


@dataclass(frozen=True)
class Inputs:
    """A batch of ``N`` samples, passed to the model positionally or by keyword.

    Attributes:
        tensors: each ``[N, *shape_k]``.
        keys: the keyword of each tensor, or ``None`` for positional arguments.
    """

    tensors: tuple[Tensor, ...]
    keys: tuple[str, ...] | None = None

    @staticmethod
    def from_user(x: InputLike, name: str = "x1") -> Inputs:
        """Normalise a user's input and check that its tensors agree on the sample count.

        Raises:
            TypeError: ``x`` is not a tensor, a sequence of tensors or a mapping of tensors.
            ValueError: the tensors disagree on their sample counts, a tensor has no sample axis, or
                ``x`` holds no tensor.
        """
        if isinstance(x, Tensor):
            inputs = Inputs((x,))
        elif isinstance(x, Mapping):
            inputs = Inputs(tuple(x.values()), tuple(x.keys()))
        elif isinstance(x, Sequence) and not isinstance(x, str):
            inputs = Inputs(tuple(x))
        else:
            raise TypeError(
                f"{name} must be a tensor, a tuple of tensors or a dict of tensors with a leading "
                f"sample axis, got {type(x).__name__}"
            )
        if not inputs.tensors:
            raise ValueError(f"{name} holds no tensor; pass at least one input tensor")
        for t in inputs.tensors:
            if not isinstance(t, Tensor):
                raise TypeError(f"{name} must hold tensors only, got {type(t).__name__}")
            if t.dim() == 0:
                raise ValueError(f"{name} holds a 0-d tensor; inputs need a leading sample axis, e.g. x.reshape(1, -1)")
        counts = {t.shape[0] for t in inputs.tensors}
        if len(counts) > 1:
            shapes = ", ".join(str(list(t.shape)) for t in inputs.tensors)
            raise ValueError(
                f"the tensors of {name} disagree on the number of samples (leading axis): {shapes}; "
                "every input tensor needs the same leading size"
            )
        return inputs

    def __len__(self) -> int:
        return self.tensors[0].shape[0]

    @property
    def sample_shapes(self) -> tuple[torch.Size, ...]:
        """The shape of one sample of each tensor (all axes but the first)."""
        return tuple(t.shape[1:] for t in self.tensors)

    def __getitem__(self, index: slice | Tensor) -> Inputs:
        return Inputs(tuple(t[index] for t in self.tensors), self.keys)

    def map(self, fn) -> Inputs:
        """Apply ``fn`` to every tensor."""
        return Inputs(tuple(fn(t) for t in self.tensors), self.keys)

    def call(self, fn, *tensors: Tensor):
        """Call ``fn`` with ``tensors`` (default: this batch's) as positional or keyword arguments."""
        tensors = tensors or self.tensors
        if self.keys is None:
            return fn(*tensors)
        return fn(**dict(zip(self.keys, tensors)))

    def check_compatible(self, other: Inputs) -> None:
        """Check that ``other`` (``x2``) has the same structure and sample shapes as this (``x1``).

        Raises:
            ValueError: naming what differs.
        """
        if self.keys != other.keys or len(self.tensors) != len(other.tensors):
            raise ValueError(
                f"x1 and x2 have different structures ({len(self.tensors)} tensor(s), keys {self.keys} "
                f"vs {len(other.tensors)} tensor(s), keys {other.keys}); pass the same kind of input"
            )
        for k, (a, b) in enumerate(zip(self.sample_shapes, other.sample_shapes)):
            if a != b:
                raise ValueError(
                    f"x1 and x2 disagree on the shape of one sample of input {k}: {list(a)} vs {list(b)}; "
                    "only the leading (sample) axis may differ"
                )
