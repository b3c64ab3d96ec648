"""MNIST and Fashion-MNIST from their IDX files in a directory the user names."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from pntk.data.errors import DatasetFileError
from pntk.data.files import file_split, locate
from pntk.data.idx import read_idx

#: File stems per split: (images, labels). Each may be stored as is or with ``.gz``.
MNIST_FILES: dict[str, tuple[str, str]] = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}

_SOURCES = {
    "mnist": (
        "MNIST/raw",
        "The files are MNIST's four IDX files (https://yann.lecun.com/exdb/mnist/ or any mirror), "
        "gzip-compressed or not.",
    ),
    "fashion-mnist": (
        "FashionMNIST/raw",
        "The files are Fashion-MNIST's four IDX files (https://github.com/zalandoresearch/fashion-mnist, "
        "folder data/fashion), gzip-compressed or not.",
    ),
}


def read_mnist(root: str | Path | None, split: str) -> tuple[np.ndarray, np.ndarray]:
    """MNIST's handwritten digits: 60,000 training and 10,000 test images of 28×28 grey pixels.

    Args:
        root: the directory holding ``train-images-idx3-ubyte``, ``train-labels-idx1-ubyte``,
            ``t10k-images-idx3-ubyte``, ``t10k-labels-idx1-ubyte`` (each possibly ``.gz``), or a parent with
            the subfolder ``MNIST/raw``.
        split: ``"train"`` or ``"test"``.

    Returns:
        ``(images, labels)``: uint8 ``[N, 1, 28, 28]`` (0 to 255) and int64 ``[N]`` in ``0..9``.

    Raises:
        DatasetNotFoundError: a file is missing.
        DatasetFileError: a file is corrupt, is not the IDX array it should be, or images and labels differ
            in number.
    """
    return _read_idx_pair(root, split, "mnist")


def read_fashion_mnist(root: str | Path | None, split: str) -> tuple[np.ndarray, np.ndarray]:
    """Fashion-MNIST's clothing images: 60,000 training and 10,000 test images of 28×28 grey pixels.

    The files have MNIST's names and format.

    Args:
        root: the directory holding the four IDX files (see :func:`read_mnist`), or a parent with the
            subfolder ``FashionMNIST/raw``.
        split: ``"train"`` or ``"test"``.

    Returns:
        ``(images, labels)``: uint8 ``[N, 1, 28, 28]`` and int64 ``[N]`` in ``0..9``.

    Raises:
        DatasetNotFoundError: a file is missing.
        DatasetFileError: a file is corrupt, is not the IDX array it should be, or images and labels differ
            in number.
    """
    return _read_idx_pair(root, split, "fashion-mnist")


def _read_idx_pair(root: str | Path | None, split: str, dataset: str) -> tuple[np.ndarray, np.ndarray]:
    subdir, source = _SOURCES[dataset]
    stems = MNIST_FILES[file_split(split)]
    images_path, labels_path = locate(
        root, [(stem, stem + ".gz") for stem in stems], dataset=dataset, subdirs=(subdir,), source=source
    )
    images = _checked(images_path, read_idx(images_path), ndim=3, what="images, [N, rows, columns]")
    labels = _checked(labels_path, read_idx(labels_path), ndim=1, what="labels, [N]")
    if len(images) != len(labels):
        raise DatasetFileError(
            labels_path,
            f"{len(labels)} labels but {images_path.name} holds {len(images)} images",
            f"The two files come from different downloads or one is damaged; replace both with the originals. {source}",
        )
    if labels.size and labels.max() > 9:
        raise DatasetFileError(
            labels_path, f"label {labels.max()} out of range 0..9", f"Replace it with the original file. {source}"
        )
    return images[:, None], labels.astype(np.int64)


def _checked(path: Path, array: np.ndarray, *, ndim: int, what: str) -> np.ndarray:
    # Swapped or renamed files are the common mistake: an images file must be 3-D bytes, a labels file 1-D.
    if array.dtype != np.uint8 or array.ndim != ndim:
        raise DatasetFileError(
            path,
            f"an IDX array of {array.dtype.name} with {array.ndim} dimensions {list(array.shape)}, where "
            f"{what} of unsigned bytes ({ndim} dimensions, magic number 0x0000080{ndim}) were expected",
            "Check that the file is the one its name says (images and labels files are easily swapped)",
        )
    return array
