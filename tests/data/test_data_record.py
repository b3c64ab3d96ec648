"""What a loaded Dataset says about itself: which rows of the split it holds and how they were normalised."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from pntk.data import Dataset, Normalization, load_dataset, read_digits, read_mnist1d, train_test


@settings(max_examples=15, deadline=None)
@given(n=st.integers(1, 355), seed=st.integers(0, 2**32 - 1), normalize=st.booleans())
def test_indices_and_normalization_rebuild_the_inputs_bit_for_bit(n, seed, normalize) -> None:
    ds = load_dataset("digits", split="test", n=n, seed=seed, normalize=normalize)
    raw, labels = read_digits("test")
    assert ds.indices.dtype == torch.int64 and bool((ds.indices.diff() > 0).all())
    np.testing.assert_array_equal(ds.y.numpy(), labels[ds.indices.numpy()])
    assert torch.equal(ds.normalization.apply(raw[ds.indices.numpy()]), ds.x)
    assert (ds.normalization.mean is None) is (not normalize)


def test_statistics_are_those_of_the_training_split() -> None:
    train, test = train_test("digits", n_test=50, seed=1)
    assert train.normalization == test.normalization
    raw_train, _ = read_digits("train")
    values = raw_train.astype(np.float64) / 16.0
    np.testing.assert_allclose(train.normalization.mean, [values.mean()], rtol=1e-12)
    np.testing.assert_allclose(train.normalization.std, [values.std()], rtol=1e-12)
    assert torch.equal(train.indices, torch.arange(len(train)))


def test_all_split_counts_training_rows_then_test_rows() -> None:
    ds = load_dataset("mnist1d", split="all", n=120, seed=5, flatten=True)
    x_train, y_train = read_mnist1d("train")
    x_test, y_test = read_mnist1d("test")
    raw, labels = np.concatenate([x_train, x_test]), np.concatenate([y_train, y_test])
    rows = ds.indices.numpy()
    assert rows.max() >= len(y_train)  # some test rows were drawn
    np.testing.assert_array_equal(ds.y.numpy(), labels[rows])
    assert torch.equal(ds.normalization.apply(raw[rows]).reshape(120, -1), ds.x)


def test_normalization_to_dict_is_json_ready() -> None:
    record = load_dataset("digits", n=10).normalization.to_dict()
    assert record["scale"] == 16.0 and len(record["mean"]) == len(record["std"]) == 1
    assert all(isinstance(v, float) for v in record["mean"] + record["std"])
    assert Normalization(255.0).to_dict() == {"scale": 255.0, "mean": None, "std": None}


def test_indices_must_match_the_labels() -> None:
    with pytest.raises(ValueError, match=r"indices \[2\] must be \[N\] like y \[3\]"):
        Dataset("toy", "train", torch.zeros(3, 2), torch.zeros(3, dtype=torch.int64), 2, torch.arange(2))
