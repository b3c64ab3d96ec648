"""Where the inputs of a large kernel come from, fetched a block of rows at a time.

A kernel too large for memory usually has inputs that are large too: :func:`row_source` wraps tensors, NumPy
arrays (memory-mapped ``.npy`` files included), map-style Datasets and DataLoaders behind one interface that
reads only the rows a tile needs.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence, Sized
from typing import Any, Protocol, cast

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, IterableDataset, SequentialSampler, default_collate

from .data import Dataset as LoadedDataset
from .kernels.inputs import Inputs

#: Rows read at a time when a whole source is hashed.
HASH_ROWS = 4096


class RowSource(Protocol):
    """``N`` samples that can be read by contiguous blocks of rows."""

    def __len__(self) -> int: ...

    def fetch(self, rows: slice) -> Inputs:
        """The samples ``rows`` (a slice with step 1) as CPU tensors ``[B, *input]``."""


class TensorRows:
    """Samples already in tensors (or NumPy arrays, read lazily when memory-mapped)."""

    def __init__(self, tensors: tuple[Tensor | np.ndarray, ...], keys: tuple[str, ...] | None):
        self.tensors, self.keys = tensors, keys

    def __len__(self) -> int:
        return len(self.tensors[0])

    def fetch(self, rows: slice) -> Inputs:
        return Inputs(tuple(_as_tensor(t[rows]) for t in self.tensors), self.keys)


class DatasetRows:
    """Samples of a map-style Dataset, collated block by block; only the requested items are read.

    An item is the input itself (a tensor, array, or dict of them) or a tuple/list whose first element is
    the input (``(input, label)``): the rest is ignored.
    """

    def __init__(self, dataset: Dataset, collate=default_collate):
        self.dataset, self.collate = dataset, collate

    def __len__(self) -> int:
        return len(cast(Sized, self.dataset))  # map-style Datasets define __len__; torch's base class does not

    def fetch(self, rows: slice) -> Inputs:
        batch = self.collate([self.dataset[k] for k in range(*rows.indices(len(self)))])
        if isinstance(batch, (tuple, list)):
            batch = batch[0]
        return Inputs.from_user(batch)


def row_source(data: Any, name: str) -> RowSource:
    """Wrap user data as a :class:`RowSource`.

    Args:
        data: a tensor or NumPy array ``[N, *input]``; a tuple or dict of them (passed to the model
            positionally or by keyword); a :class:`pntk.data.Dataset` (its inputs ``x``); a map-style
            ``torch.utils.data.Dataset``; or a ``DataLoader`` over one that does not shuffle (its
            ``collate_fn`` is used, its batch size is not).
        name: how errors call it (``"data1"``).

    Raises:
        TypeError: data of another type, or a DataLoader over an iterable dataset (no random access).
        ValueError: a shuffling DataLoader (no fixed order), an empty source, or tensors that disagree on
            the number of samples.
    """
    if isinstance(data, DataLoader):
        if isinstance(data.dataset, IterableDataset):
            raise TypeError(
                f"{name} is a DataLoader over an IterableDataset, whose rows cannot be read by index; save "
                "the inputs to a tensor or .npy file, or pass a map-style Dataset"
            )
        if not isinstance(data.sampler, SequentialSampler):
            raise ValueError(
                f"{name} is a DataLoader with a {type(data.sampler).__name__}, so its order changes between "
                "runs and a resumed kernel would not match; use shuffle=False or pass its dataset"
            )
        source: RowSource = DatasetRows(data.dataset, data.collate_fn)
    elif isinstance(data, LoadedDataset):
        source = TensorRows((data.x,), None)
    elif isinstance(data, IterableDataset):
        raise TypeError(f"{name} is an IterableDataset, whose rows cannot be read by index; pass a map-style one")
    elif isinstance(data, Dataset):
        source = DatasetRows(data)
    elif _holds_arrays(data):
        arrays = tuple(data.values()) if isinstance(data, Mapping) else (data,) if _is_array(data) else tuple(data)
        source = TensorRows(arrays, tuple(data.keys()) if isinstance(data, Mapping) else None)
    elif isinstance(data, (Tensor, Mapping)) or (isinstance(data, Sequence) and not isinstance(data, str)):
        inputs = Inputs.from_user(data, name)  # its checks name what is wrong with tensors
        source = TensorRows(inputs.tensors, inputs.keys)
    else:
        raise TypeError(
            f"{name} must be a tensor, a tuple of tensors or a dict of tensors (or NumPy arrays) with a leading "
            f"sample axis, a map-style Dataset or a DataLoader, got {type(data).__name__}"
        )
    if isinstance(source, TensorRows):
        for t in source.tensors:
            if not isinstance(t, (Tensor, np.ndarray)) or t.ndim == 0:
                raise TypeError(f"{name} must hold tensors or arrays with a leading sample axis")
        counts = {len(t) for t in source.tensors}
        if len(counts) > 1:
            raise ValueError(f"the tensors of {name} disagree on the number of samples: {sorted(counts)}")
    if len(source) == 0:
        raise ValueError(f"{name} is empty (0 samples); pass at least one sample")
    return source


def _is_array(x: Any) -> bool:
    return isinstance(x, np.ndarray)


def _holds_arrays(data: Any) -> bool:
    """Whether ``data`` is a NumPy array or a tuple/dict holding one (read lazily, row block by row block)."""
    if isinstance(data, Mapping):
        return any(map(_is_array, data.values()))
    if isinstance(data, Sequence) and not isinstance(data, str):
        return any(map(_is_array, data))
    return _is_array(data)


def fingerprint(source: RowSource) -> str:
    """``sha256:…`` of the inputs' bytes, dtypes, shapes and keyword names, read :data:`HASH_ROWS` at a time.

    The digest does not depend on how the source is wrapped: the same numbers as a tensor, an array or a
    Dataset hash alike.
    """
    first = source.fetch(slice(0, 1))
    hashers = [hashlib.sha256() for _ in first.tensors]
    for start in range(0, len(source), HASH_ROWS):
        for h, t in zip(hashers, source.fetch(slice(start, start + HASH_ROWS)).tensors):
            h.update(_tensor_bytes(t))
    total = hashlib.sha256(repr((len(source), first.keys)).encode())
    for h, t in zip(hashers, first.tensors):
        total.update(repr((str(t.dtype), tuple(t.shape[1:]))).encode())
        total.update(h.digest())
    return "sha256:" + total.hexdigest()


def _tensor_bytes(t: Tensor) -> memoryview:
    """The bytes of ``t`` in C order (its dtype's own layout, so bfloat16 works too)."""
    return t.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().data


def _as_tensor(x: Tensor | np.ndarray) -> Tensor:
    if isinstance(x, Tensor):
        return x
    # torch wants a writable array in native byte order; a slice of a read-only memory map is neither
    # guaranteed, so copy only then.
    return torch.from_numpy(np.array(x, dtype=x.dtype.newbyteorder("="), copy=not x.flags.writeable or None))
