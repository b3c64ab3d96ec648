"""The entry point: names, splits, subsets, targets and the Dataset record."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from pntk.data import (
    Dataset,
    DatasetName,
    Split,
    channel_stats,
    load_dataset,
    one_hot_targets,
    stratified_indices,
    train_test,
)
from pntk.data.normalize import to_tensor


def test_unknown_name_lists_valid_ones() -> None:
    with pytest.raises(
        ValueError,
        match="unknown dataset 'imagenet'; valid names are digits, mnist1d, cifar10, cifar100, mnist, fashion-mnist",
    ):
        load_dataset("imagenet")


def test_names_as_strings_or_members() -> None:
    assert DatasetName("Fashion_MNIST") is DatasetName.FASHION_MNIST
    assert DatasetName("CIFAR10") is DatasetName.CIFAR10
    a = load_dataset(DatasetName.DIGITS, split=Split.TEST)
    b = load_dataset("digits", split="test")
    assert a.name == "digits" and a.split == "test" and torch.equal(a.x, b.x)


def test_unknown_split() -> None:
    with pytest.raises(ValueError, match="unknown split 'val'; valid splits are train, test, all"):
        load_dataset("digits", split="val")


def test_all_is_train_then_test() -> None:
    train, test = train_test("digits")
    both = load_dataset("digits", split="all")
    assert torch.equal(both.x, torch.cat([train.x, test.x])) and torch.equal(both.y, torch.cat([train.y, test.y]))


def test_subset_is_stratified_ordered_and_seeded() -> None:
    full = load_dataset("digits")
    sub = load_dataset("digits", n=100, seed=3)
    assert len(sub) == 100 and sub.x.shape == (100, 1, 8, 8)
    counts = np.bincount(sub.y.numpy(), minlength=10)
    proportional = 100 * np.bincount(full.y.numpy()) / len(full)
    assert counts.sum() == 100 and np.all(np.abs(counts - proportional) < 1)
    keep = stratified_indices(full.y.numpy(), 100, seed=3)
    assert np.all(np.diff(keep) > 0)
    assert torch.equal(sub.x, full.x[keep]) and torch.equal(sub.y, full.y[keep])
    assert torch.equal(load_dataset("digits", n=100, seed=3).x, sub.x)
    assert not torch.equal(load_dataset("digits", n=100, seed=4).y, sub.y)


def test_subset_size_checked() -> None:
    with pytest.raises(ValueError, match="n must be between 1 and the number of samples, 355; got 356"):
        load_dataset("digits", split="test", n=356)
    with pytest.raises(ValueError, match="got 0"):
        load_dataset("digits", n=0)


def test_largest_remainders_break_ties_to_smaller_labels() -> None:
    labels = np.array([0] * 5 + [1] * 3 + [2] * 2)
    # 4·(5, 3, 2)/10 = (2, 1.2, 0.8): floors (2, 1, 0), the one place left goes to class 2 (remainder 0.8).
    np.testing.assert_array_equal(np.bincount(labels[stratified_indices(labels, 4)]), [2, 1, 1])
    # 5·(3, 3)/6 = (2.5, 2.5): the tie goes to class 0.
    labels = np.array([0, 1] * 3)
    np.testing.assert_array_equal(np.bincount(labels[stratified_indices(labels, 5)]), [3, 2])


@settings(max_examples=60, deadline=None)
@given(
    labels=st.lists(st.integers(0, 6), min_size=1, max_size=60),
    fraction=st.floats(0, 1),
    seed=st.integers(0, 2**32 - 1),
)
def test_stratified_indices_properties(labels: list[int], fraction: float, seed: int) -> None:
    labels = np.array(labels)
    n = max(1, round(fraction * len(labels)))
    keep = stratified_indices(labels, n, seed=seed)
    assert keep.dtype == np.int64 and len(keep) == n and len(np.unique(keep)) == n
    assert np.all(np.diff(keep) > 0) and keep.min() >= 0 and keep.max() < len(labels)
    counts = np.bincount(labels[keep], minlength=7)
    assert np.all(np.abs(counts - n * np.bincount(labels, minlength=7) / len(labels)) < 1)
    np.testing.assert_array_equal(keep, stratified_indices(labels, n, seed=seed))


def test_one_hot_targets() -> None:
    y = torch.tensor([2, 0, 1, 2])
    expected = torch.tensor([[0.0, 0, 1], [1, 0, 0], [0, 1, 0], [0, 0, 1]])
    assert torch.equal(one_hot_targets(y, 3), expected)
    centred = one_hot_targets(y, 3, center=True, dtype=torch.float64)
    assert centred.dtype == torch.float64
    torch.testing.assert_close(centred, expected.double() - 1 / 3, rtol=0, atol=0)
    torch.testing.assert_close(centred.sum(dim=1), torch.zeros(4, dtype=torch.float64), rtol=0, atol=1e-15)
    with pytest.raises(ValueError, match=re.escape("labels must lie in 0..2, got 0..3")):
        one_hot_targets(torch.tensor([0, 3]), 3)


def test_dataset_targets_and_checks() -> None:
    ds = load_dataset("digits", split="test", n=20)
    targets = ds.targets(center=True)
    assert targets.shape == (20, 10)
    torch.testing.assert_close(targets.argmax(dim=1), ds.y, rtol=0, atol=0)
    torch.testing.assert_close(targets.max(dim=1).values, torch.full((20,), 0.9), rtol=0, atol=1e-7)
    with pytest.raises(ValueError, match=r"x \[3, 2\] and y \[2\] must be \[N, \*input\] and \[N\]"):
        Dataset("toy", "train", torch.zeros(3, 2), torch.zeros(2, dtype=torch.int64), 2)
    with pytest.raises(AttributeError):
        ds.num_classes = 3  # frozen


def test_constant_channel_is_only_centred() -> None:
    x = np.stack([np.full((2, 3), 51, np.uint8), np.array([[0, 255, 0], [255, 0, 255]], np.uint8)], axis=1)
    mean, std = channel_stats(x, scale=255.0)
    np.testing.assert_allclose(mean, [0.2, 0.5], rtol=1e-15)
    np.testing.assert_allclose(std, [0.0, 0.5], atol=1e-15)
    out = to_tensor(x, scale=255.0, mean=mean, std=std)
    assert torch.equal(out[:, 0], torch.zeros(2, 3)) and torch.equal(
        out[:, 1], torch.tensor([[-1.0, 1, -1], [1, -1, 1]])
    )


def test_channel_stats_integer_and_float_paths_agree() -> None:
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (9, 3, 4, 5), dtype=np.uint8)
    mean, std = channel_stats(x, scale=255.0)
    mean_f, std_f = channel_stats(x.astype(np.float64), scale=255.0)
    np.testing.assert_allclose(mean, mean_f, rtol=1e-14)
    np.testing.assert_allclose(std, std_f, rtol=1e-12)
    np.testing.assert_allclose(mean, (x / 255.0).mean(axis=(0, 2, 3)), rtol=1e-14)
