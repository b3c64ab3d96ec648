"""One entry point for every dataset: :func:`load_dataset`, and :func:`train_test` for both splits at once."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum
from pathlib import Path

import numpy as np
import torch

from pntk.data.builtin import mnist1d_total, read_digits, read_mnist1d
from pntk.data.cifar import read_cifar10, read_cifar100
from pntk.data.dataset import Dataset
from pntk.data.errors import DatasetNotFoundError
from pntk.data.mnist import read_fashion_mnist, read_mnist
from pntk.data.normalize import Normalization, channel_stats
from pntk.data.subset import stratified_indices


class DatasetName(str, Enum):
    """The datasets :func:`load_dataset` knows; ``"cifar10"`` and ``DatasetName.CIFAR10`` both work.

    - ``digits``, ``mnist1d``: built in, no files needed.
    - ``cifar10``, ``cifar100``: the binary version's files (see :func:`~pntk.data.read_cifar10`).
    - ``mnist``, ``fashion-mnist``: the IDX files, gzip-compressed or not (see :func:`~pntk.data.read_mnist`).
    """

    DIGITS = "digits"
    MNIST1D = "mnist1d"
    CIFAR10 = "cifar10"
    CIFAR100 = "cifar100"
    MNIST = "mnist"
    FASHION_MNIST = "fashion-mnist"

    @classmethod
    def _missing_(cls, value: object) -> DatasetName:
        # Case and "_" for "-" are forgiven ("Fashion_MNIST"); anything else lists the valid names.
        if isinstance(value, str):
            for member in cls:
                if member.value == value.lower().replace("_", "-"):
                    return member
        raise ValueError(f"unknown dataset {value!r}; valid names are {', '.join(m.value for m in cls)}")


class Split(str, Enum):
    """Which part of a dataset: ``"train"``, ``"test"``, or ``"all"`` (training then test samples)."""

    TRAIN = "train"
    TEST = "test"
    ALL = "all"

    @classmethod
    def _missing_(cls, value: object) -> Split:
        raise ValueError(f"unknown split {value!r}; valid splits are {', '.join(m.value for m in cls)}")


@dataclass(frozen=True)
class _Source:
    # (root, split, samples to generate): the last is read by generated datasets only (MNIST-1D).
    read: Callable[[str | Path | None, str, int], tuple[np.ndarray, np.ndarray]]
    num_classes: int
    scale: float  # maps raw values to [0, 1]


_SOURCES: dict[DatasetName, _Source] = {
    DatasetName.DIGITS: _Source(lambda root, split, total: read_digits(split), 10, 16.0),
    DatasetName.MNIST1D: _Source(lambda root, split, total: read_mnist1d(split, total), 10, 1.0),
    DatasetName.CIFAR10: _Source(lambda root, split, total: read_cifar10(root, split), 10, 255.0),
    DatasetName.CIFAR100: _Source(lambda root, split, total: read_cifar100(root, split), 100, 255.0),
    DatasetName.MNIST: _Source(lambda root, split, total: read_mnist(root, split), 10, 255.0),
    DatasetName.FASHION_MNIST: _Source(lambda root, split, total: read_fashion_mnist(root, split), 10, 255.0),
}


def load_dataset(
    name: str | DatasetName,
    root: str | Path | None = None,
    *,
    split: str | Split = "train",
    n: int | None = None,
    flatten: bool = False,
    normalize: bool = True,
    seed: int = 0,
) -> Dataset:
    """Load one split of a dataset as float32 inputs and int64 labels; nothing is downloaded.

    Inputs are first scaled to ``[0, 1]`` (pixels divided by 255, digits' grey levels by 16; MNIST-1D is
    left as its generator standardised it). With ``normalize`` each channel is then standardised,
    ``x̂[:, c] = (x[:, c] − μ_c)/σ_c``, with the mean and standard deviation of that channel over the whole
    *training* split (all samples and positions), whatever ``split`` and ``n`` are — so training and test
    inputs go through the same map. For CIFAR-10 these are the familiar ``μ ≈ (0.4914, 0.4822, 0.4465)``,
    ``σ ≈ (0.2470, 0.2435, 0.2616)``.

    Shapes of ``x`` (``N`` samples; ``[N, D]`` with ``flatten``, ``D`` the product of the rest):

    ==================  ===================  =====  ===============  ===============
    name                x                    O      N train          N test
    ==================  ===================  =====  ===============  ===============
    ``digits``          ``[N, 1, 8, 8]``     10     1,442            355
    ``mnist1d``         ``[N, 1, 40]``       10     4,000 *          1,000 *
    ``cifar10``         ``[N, 3, 32, 32]``   10     50,000           10,000
    ``cifar100``        ``[N, 3, 32, 32]``   100    50,000           10,000
    ``mnist``           ``[N, 1, 28, 28]``   10     60,000           10,000
    ``fashion-mnist``   ``[N, 1, 28, 28]``   10     60,000           10,000
    ==================  ===================  =====  ===============  ===============

    (*) MNIST-1D is generated: up to these sizes it is the standard set; an ``n`` beyond them generates a larger
    set by the same generator (:func:`~pntk.data.mnist1d_total` samples, 80% for training) with a seed of its
    own, so that it shares no sample with the standard set or a set of any other size
    (:func:`~pntk.data.read_mnist1d`). Take both splits from one call of :func:`train_test`, or ask each for
    the sizes of the same set.

    Args:
        name: a :class:`DatasetName`; an unknown name raises an error that lists the valid ones.
        root: the directory that holds the dataset's files (or the standard subfolder they extract to);
            ignored by the built-in ``digits`` and ``mnist1d``.
        split: ``"train"``, ``"test"`` or ``"all"`` (training then test samples).
        n: take a subset of ``n`` samples of the split: stratified (class proportions kept to within one
            sample), drawn at random with ``seed``, in the original order (see
            :func:`~pntk.data.stratified_indices`). ``None`` takes all.
        flatten: return ``x`` as ``[N, D]``.
        normalize: standardise each channel with the training split's statistics. For a file-based dataset
            this reads the training files even for ``split="test"``.
        seed: the seed of the subset; unused when ``n`` is ``None``.

    Returns:
        A :class:`Dataset` with ``x`` float32 ``[N, *input]`` (or ``[N, D]``), ``y`` int64 ``[N]``, the rows of
        the split it took (``indices``) and the map applied to the raw values (``normalization``).

    Raises:
        ValueError: an unknown name or split, or ``n`` outside ``1..N``.
        DatasetNotFoundError: a file is missing; the message says which and where files are expected.
        DatasetFileError: a file is truncated or not in the expected format; the message says what is wrong.

    Example:
        >>> ds = load_dataset("digits", split="all")
        >>> ds.x.shape, ds.y.dtype, ds.num_classes
        (torch.Size([1797, 1, 8, 8]), torch.int64, 10)
        >>> small = load_dataset("digits", n=100, flatten=True, normalize=False)
        >>> small.x.shape, float(small.x.min()), float(small.x.max()), small.targets(center=True).shape
        (torch.Size([100, 64]), 0.0, 1.0, torch.Size([100, 10]))
        >>> small.indices[:3].tolist(), small.normalization
        ([18, 19, 22], Normalization(scale=16.0, mean=None, std=None))
    """
    name, split = DatasetName(name), Split(split)
    source = _SOURCES[name]
    parts = [Split.TRAIN, Split.TEST] if split is Split.ALL else [split]
    total = mnist1d_total(**{f"n_{split.value}": n})
    raw = {part: source.read(root, part.value, total) for part in parts}
    stats = _training_stats(name, source, root, raw, total) if normalize else None
    x = np.concatenate([raw[part][0] for part in parts])
    y = np.concatenate([raw[part][1] for part in parts])
    return _dataset(name, split, x, y, source, stats, n=n, flatten=flatten, seed=seed)


def train_test(
    name: str | DatasetName,
    root: str | Path | None = None,
    *,
    n_train: int | None = None,
    n_test: int | None = None,
    flatten: bool = False,
    normalize: bool = True,
    seed: int = 0,
) -> tuple[Dataset, Dataset]:
    """The training and test splits of a dataset, each file read once; see :func:`load_dataset`.

    Args:
        name: a :class:`DatasetName`.
        root: the directory that holds the dataset's files; ignored by ``digits`` and ``mnist1d``.
        n_train: the size of a stratified subset of the training split (``None``: all of it).
        n_test: the size of a stratified subset of the test split (``None``: all of it).
        flatten: return inputs as ``[N, D]``.
        normalize: standardise each channel with the training split's statistics (both splits alike).
        seed: the seed of both subsets.

    Returns:
        ``(train, test)``, two :class:`Dataset`.

    Example:
        >>> train, test = train_test("digits", n_train=200)
        >>> len(train), len(test)
        (200, 355)
    """
    name = DatasetName(name)
    source = _SOURCES[name]
    total = mnist1d_total(n_train, n_test)
    raw = {part: source.read(root, part.value, total) for part in (Split.TRAIN, Split.TEST)}
    stats = _training_stats(name, source, root, raw, total) if normalize else None
    return (
        _dataset(name, Split.TRAIN, *raw[Split.TRAIN], source, stats, n=n_train, flatten=flatten, seed=seed),
        _dataset(name, Split.TEST, *raw[Split.TEST], source, stats, n=n_test, flatten=flatten, seed=seed),
    )


def _training_stats(
    name: DatasetName,
    source: _Source,
    root: str | Path | None,
    raw: dict[Split, tuple[np.ndarray, np.ndarray]],
    total: int,
) -> tuple[np.ndarray, np.ndarray]:
    if Split.TRAIN not in raw:
        try:
            raw = {Split.TRAIN: source.read(root, Split.TRAIN.value, total)}
        except DatasetNotFoundError as error:
            raise DatasetNotFoundError(
                f"{error} normalize=True standardises with the training split's statistics, so the training "
                f"files are needed too; pass normalize=False to read only the test files of {name.value}.",
                error.path,
            ) from error
    return channel_stats(raw[Split.TRAIN][0], scale=source.scale)


def _dataset(
    name: DatasetName,
    split: Split,
    x: np.ndarray,
    y: np.ndarray,
    source: _Source,
    stats: tuple[np.ndarray, np.ndarray] | None,
    *,
    n: int | None,
    flatten: bool,
    seed: int,
) -> Dataset:
    keep = np.arange(len(y), dtype=np.int64) if n is None else stratified_indices(y, n, seed=seed)
    if n is not None:
        x, y = x[keep], y[keep]
    normalization = Normalization(source.scale)
    if stats is not None:
        mean, std = stats
        # The divisors actually used: a constant channel (std 0) is only centred.
        normalization = Normalization(
            source.scale, tuple(map(float, mean)), tuple(np.where(std > 0, std, 1.0).tolist())
        )
    inputs = normalization.apply(x)
    if flatten:
        inputs = inputs.reshape(len(inputs), -1)
    labels = torch.from_numpy(np.array(y, dtype=np.int64))  # a copy: the built-in sets share read-only arrays
    return Dataset(name.value, split.value, inputs, labels, source.num_classes, torch.from_numpy(keep), normalization)
