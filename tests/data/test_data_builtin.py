"""The built-in datasets: scikit-learn's digits and MNIST-1D generated offline."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch
from mnist1d.data import get_dataset_args, make_dataset
from sklearn.datasets import load_digits

from pntk.data import load_dataset, mnist1d_total, read_digits, read_mnist1d, train_test
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


def test_mnist1d_beyond_the_standard_sizes_is_generated_larger_by_the_same_generator() -> None:
    """Asking for more samples than the standard split holds generates the least set that holds them (10
    classes, 80% for training), as ``make_dataset`` with that ``num_samples`` and seed ``42 + num_samples``
    does; sets of different sizes share no sample (with one seed, they would share many)."""
    assert [mnist1d_total(n) for n in (1, 4000, 4001, 20000, 1_000_000)] == [5000, 5000, 5010, 25000, 1250000]
    assert mnist1d_total(n_test=1001) == 5010 and mnist1d_total(n_all=5001) == 5010
    args = get_dataset_args()
    args.num_samples, args.seed = 6250, 42 + 6250
    reference = make_dataset(args)
    train, test = train_test("mnist1d", n_train=5000, normalize=False)
    assert len(train) == 5000 and len(test) == 1250
    np.testing.assert_array_equal(test.x[:, 0].numpy(), reference["x_test"].astype(np.float32))
    np.testing.assert_array_equal(train.x[:, 0].numpy(), reference["x"].astype(np.float32))
    # A subset of the training split of the same larger set (4,996 need 625 per class, as 5,000 do), stratified.
    ds = load_dataset("mnist1d", n=4996, normalize=False)
    assert len(ds) == 4996 and set(ds.indices.tolist()) <= set(range(5000))
    np.testing.assert_array_equal(ds.x[:, 0].numpy(), reference["x"][ds.indices.numpy()].astype(np.float32))
    assert load_dataset("mnist1d", split="test", n=1000, normalize=False).x.shape == (1000, 1, 40)
    np.testing.assert_array_equal(read_mnist1d("test")[0][:, 0], make_dataset(get_dataset_args())["x_test"])

    def repeated(a: np.ndarray, b: np.ndarray) -> int:
        """Rows of ``a`` that are a row of ``b`` up to the affine map of each set's standardisation."""
        za, zb = (m - m.mean(1, keepdims=True) for m in (a, b))
        za, zb = (z / np.linalg.norm(z, axis=1, keepdims=True) for z in (za, zb))
        return int(((za @ zb.T) > 1 - 1e-9).any(1).sum())

    standard = np.concatenate([read_mnist1d(split)[0][:, 0] for split in ("train", "test")])
    assert repeated(standard, np.concatenate([reference["x"], reference["x_test"]])) == 0
    args.seed = 42  # the trap a seed per size avoids: class c's samples from 125·c on come again
    assert repeated(standard, np.concatenate([*(make_dataset(args)[key] for key in ("x", "x_test"))])) == 1250
