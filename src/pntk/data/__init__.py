"""Datasets without a network: built-in digits and MNIST-1D, and CIFAR-10/100, MNIST, Fashion-MNIST read from
their standard files in a directory the user names."""

from pntk.data.builtin import mnist1d_seed, mnist1d_total, read_digits, read_mnist1d
from pntk.data.cifar import read_cifar10, read_cifar100
from pntk.data.dataset import Dataset, one_hot_targets
from pntk.data.errors import DatasetFileError, DatasetNotFoundError
from pntk.data.idx import read_idx
from pntk.data.load import DatasetName, Split, load_dataset, train_test
from pntk.data.mnist import read_fashion_mnist, read_mnist
from pntk.data.normalize import Normalization, channel_stats
from pntk.data.subset import stratified_indices

__all__ = [
    "Dataset",
    "DatasetFileError",
    "DatasetName",
    "DatasetNotFoundError",
    "Normalization",
    "Split",
    "channel_stats",
    "load_dataset",
    "mnist1d_seed",
    "mnist1d_total",
    "one_hot_targets",
    "read_cifar10",
    "read_cifar100",
    "read_digits",
    "read_fashion_mnist",
    "read_idx",
    "read_mnist",
    "read_mnist1d",
    "stratified_indices",
    "train_test",
]
