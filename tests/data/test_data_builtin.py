"""The built-in datasets: scikit-learn's digits and MNIST-1D generated offline."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch
from mnist1d.data import get_dataset_args, make_dataset
from sklearn.datasets import load_digits

from pntk.data import load_dataset, read_digits, read_mnist1d, train_test
from pntk.data.builtin import _mnist1d


def test_digits_split_is_every_fifth_of_each_class() -> None:
    digits = load_digits()
    is_test = np.zeros(len(digits.target), bool)
    for c in range(10):
        is_test[np.flatnonzero(digits.target == c)[4::5]] = True
    for split, mask in (("train", ~is_test), ("test", is_test)):
        images, labels = read_digits(split)
        np.testing.assert_array_equal(images[:, 0], digits.images[mask])
        np.testing.assert_array_equal(labels, digits.target[mask])
    assert (~is_test).sum() == 1442 and is_test.sum() == 355
    np.testing.assert_array_equal(np.bincount(read_digits("test")[1]), [35, 36, 35, 36, 36, 36, 36, 35, 34, 36])


def test_digits_dataset() -> None:
    ds = load_dataset("digits", split="all", normalize=False)
    assert ds.x.shape == (1797, 1, 8, 8) and ds.x.dtype == torch.float32
    assert ds.y.shape == (1797,) and ds.y.dtype == torch.int64 and ds.num_classes == 10
    assert float(ds.x.min()) == 0.0 and float(ds.x.max()) == 1.0
    torch.testing.assert_close(ds.x * 16, torch.round(ds.x * 16), rtol=0, atol=1e-6)  # grey levels 0..16
    flat = load_dataset("digits", split="test", flatten=True)
    assert flat.x.shape == (355, 64)


def test_digits_normalised_with_training_statistics() -> None:
    train, test = train_test("digits")
    assert abs(float(train.x.double().mean())) < 1e-6
    assert abs(float(train.x.double().std(unbiased=False)) - 1) < 1e-6
    pixels = read_digits("train")[0] / 16.0
    raw_test = read_digits("test")[0] / 16.0
    np.testing.assert_allclose(test.x.numpy(), (raw_test - pixels.mean()) / pixels.std(), rtol=0, atol=2e-6)


@pytest.fixture(scope="module")
def reference() -> dict[str, np.ndarray]:
    """MNIST-1D straight from the package's generator with its default arguments."""
    return make_dataset(get_dataset_args())


def test_mnist1d_is_the_package_dataset(reference: dict[str, np.ndarray]) -> None:
    train, test = train_test("mnist1d", normalize=False)
    assert train.x.shape == (4000, 1, 40) and test.x.shape == (1000, 1, 40)
    np.testing.assert_array_equal(train.x[:, 0].numpy(), reference["x"].astype(np.float32))
    np.testing.assert_array_equal(test.x[:, 0].numpy(), reference["x_test"].astype(np.float32))
    np.testing.assert_array_equal(train.y.numpy(), reference["y"])
    np.testing.assert_array_equal(test.y.numpy(), reference["y_test"])
    assert train.y.dtype == torch.int64
    np.testing.assert_array_equal(np.bincount(np.concatenate([train.y, test.y])), np.full(10, 500))


def test_mnist1d_deterministic_and_leaves_global_rng_alone(reference: dict[str, np.ndarray]) -> None:
    _mnist1d.cache_clear()  # generate afresh, under a global state of our own
    random.seed(123)
    np.random.seed(123)
    expected = (random.random(), np.random.rand())
    random.seed(123)
    np.random.seed(123)
    signals, labels = read_mnist1d("test")
    assert (random.random(), np.random.rand()) == expected
    np.testing.assert_array_equal(signals[:, 0], reference["x_test"])
    np.testing.assert_array_equal(labels, reference["y_test"])


def test_mnist1d_flat_and_normalised() -> None:
    ds = load_dataset("mnist1d", split="test", flatten=True)
    assert ds.x.shape == (1000, 40)
    train = load_dataset("mnist1d", flatten=True).x.double()
    assert abs(float(train.mean())) < 1e-6 and abs(float(train.std(unbiased=False)) - 1) < 1e-6
