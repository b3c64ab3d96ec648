"""CIFAR-10 and CIFAR-100 from the files of their binary version; the Python version (pickles) is never read.

A binary file is a sequence of records, one per image: the label byte(s), then 3,072 pixel bytes — the
1,024 red values of the 32×32 image in row-major order, then the green, then the blue. CIFAR-10 has one label
byte (class ``0..9``); CIFAR-100 has two, the coarse label (superclass ``0..19``) then the fine one
(``0..99``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import numpy as np

from pntk.data.errors import DatasetFileError
from pntk.data.files import file_split, locate

_PIXELS = 3 * 32 * 32

CIFAR10_FILES: dict[str, tuple[str, ...]] = {
    "train": tuple(f"data_batch_{k}.bin" for k in range(1, 6)),
    "test": ("test_batch.bin",),
}
CIFAR100_FILES: dict[str, tuple[str, ...]] = {"train": ("train.bin",), "test": ("test.bin",)}

_CIFAR10_SOURCE = (
    "They come from the binary version of CIFAR-10, https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz, "
    "which extracts to the folder cifar-10-batches-bin."
)
_CIFAR100_SOURCE = (
    "They come from the binary version of CIFAR-100, https://www.cs.toronto.edu/~kriz/cifar-100-binary.tar.gz, "
    "which extracts to the folder cifar-100-binary."
)


def read_cifar10(root: str | Path | None, split: str) -> tuple[np.ndarray, np.ndarray]:
    """CIFAR-10: 50,000 training and 10,000 test colour images of 32×32 pixels in 10 classes.

    The training split is ``data_batch_1.bin`` to ``data_batch_5.bin`` in that order.

    Args:
        root: the directory holding ``data_batch_1.bin`` … ``data_batch_5.bin`` and ``test_batch.bin``, or a
            parent with the subfolder ``cifar-10-batches-bin``.
        split: ``"train"`` or ``"test"``.

    Returns:
        ``(images, labels)``: uint8 ``[N, 3, 32, 32]`` (channels red, green, blue) and int64 ``[N]`` in
        ``0..9``.

    Raises:
        DatasetNotFoundError: a file is missing (the message says so when only the Python version is there).
        DatasetFileError: a file is not a whole number of records, or holds a label out of range.
    """
    names = CIFAR10_FILES[file_split(split)]
    paths = locate(
        root,
        [(name,) for name in names],
        dataset="cifar10",
        subdirs=("cifar-10-batches-bin",),
        source=_CIFAR10_SOURCE,
        hint=_pickle_hint(root, "cifar-10-batches-py", "data_batch_1"),
    )
    parts = [_read_records(path, labels=1, num_classes=(10,), source=_CIFAR10_SOURCE) for path in paths]
    images = np.concatenate([images for images, _ in parts])
    labels = np.concatenate([labels[:, 0] for _, labels in parts])
    return images, labels


def read_cifar100(
    root: str | Path | None, split: str, *, labels: Literal["fine", "coarse"] = "fine"
) -> tuple[np.ndarray, np.ndarray]:
    """CIFAR-100: 50,000 training and 10,000 test colour images of 32×32 pixels in 100 classes.

    Args:
        root: the directory holding ``train.bin`` and ``test.bin``, or a parent with the subfolder
            ``cifar-100-binary``.
        split: ``"train"`` or ``"test"``.
        labels: ``"fine"`` for the 100 classes, ``"coarse"`` for the 20 superclasses.

    Returns:
        ``(images, labels)``: uint8 ``[N, 3, 32, 32]`` (channels red, green, blue) and int64 ``[N]`` in
        ``0..99`` (fine) or ``0..19`` (coarse).

    Raises:
        ValueError: ``labels`` is neither ``"fine"`` nor ``"coarse"``.
        DatasetNotFoundError: the file is missing (the message says so when only the Python version is there).
        DatasetFileError: the file is not a whole number of records, or holds a label out of range.
    """
    if labels not in ("fine", "coarse"):
        raise ValueError(f"labels must be 'fine' or 'coarse', got {labels!r}")
    (path,) = locate(
        root,
        [CIFAR100_FILES[file_split(split)]],
        dataset="cifar100",
        subdirs=("cifar-100-binary",),
        source=_CIFAR100_SOURCE,
        hint=_pickle_hint(root, "cifar-100-python", "train"),
    )
    images, both = _read_records(path, labels=2, num_classes=(20, 100), source=_CIFAR100_SOURCE)
    return images, both[:, 1 if labels == "fine" else 0]


def _read_records(
    path: Path, *, labels: int, num_classes: tuple[int, ...], source: str
) -> tuple[np.ndarray, np.ndarray]:
    """``(images [M, 3, 32, 32] uint8, labels [M, labels] int64)`` from one binary file."""
    record = labels + _PIXELS
    data = np.fromfile(path, dtype=np.uint8)
    if data.size == 0 or data.size % record:
        label_bytes = "1 label byte" if labels == 1 else f"{labels} label bytes"
        raise DatasetFileError(
            path,
            f"{data.size} bytes is not a whole, positive number of {record}-byte records ({label_bytes} + "
            f"{_PIXELS} pixel bytes): the file is truncated, or is not this dataset's binary version",
            f"Extract it again from the original archive. {source}",
        )
    records = data.reshape(-1, record)
    for column, bound in enumerate(num_classes):
        largest = int(records[:, column].max())
        if largest >= bound:
            raise DatasetFileError(
                path,
                f"label {largest} in label byte {column + 1} of a record, out of range 0..{bound - 1}: "
                f"not this dataset's binary version",
                f"Check that the file belongs to this dataset and extract it again from the original archive. {source}",
            )
    return records[:, labels:].reshape(-1, 3, 32, 32), records[:, :labels].astype(np.int64)


def _pickle_hint(root: str | Path | None, folder: str, pickle_name: str) -> str:
    # Pointing at the Python version is the usual mistake; say why it is not used instead of only "missing".
    if root is None:
        return ""
    root = Path(root).expanduser()
    if (root / folder).is_dir() or (root / pickle_name).is_file():
        return (
            f"Found the Python version ({folder}), which is never loaded because its files are pickles that "
            f"can run code; use the binary version instead."
        )
    return ""
