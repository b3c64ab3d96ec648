"""MNIST and Fashion-MNIST from small IDX files written in exactly the distributed format."""

from __future__ import annotations

import gzip
import re
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from pntk.data import DatasetFileError, DatasetNotFoundError, load_dataset, read_fashion_mnist, read_mnist

N_TRAIN, N_TEST = 7, 4


def idx_ubyte(array: np.ndarray) -> bytes:
    """IDX bytes of a uint8 array: magic 0x0000080d, big-endian sizes, then the values."""
    return bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape) + array.tobytes()


def write_mnist(directory: Path, *, compress: bool, seed: int = 0) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Write the four files (``.gz`` when ``compress``) and return ``{split: (images, labels)}``."""
    rng = np.random.default_rng(seed)
    directory.mkdir(parents=True, exist_ok=True)
    written = {}
    for split, prefix, n in (("train", "train", N_TRAIN), ("test", "t10k", N_TEST)):
        images = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
        labels = rng.integers(0, 10, n, dtype=np.uint8)
        for kind, array in (("images-idx3-ubyte", images), ("labels-idx1-ubyte", labels)):
            data = idx_ubyte(array)
            name = f"{prefix}-{kind}" + (".gz" if compress else "")
            (directory / name).write_bytes(gzip.compress(data) if compress else data)
        written[split] = (images, labels)
    return written


@pytest.mark.parametrize("compress", [False, True])
@pytest.mark.parametrize("read", [read_mnist, read_fashion_mnist])
def test_read_exact(tmp_path: Path, compress: bool, read) -> None:
    written = write_mnist(tmp_path, compress=compress)
    for split, (images, labels) in written.items():
        x, y = read(tmp_path, split)
        assert x.shape == (len(labels), 1, 28, 28) and x.dtype == np.uint8
        assert y.dtype == np.int64
        np.testing.assert_array_equal(x[:, 0], images)
        np.testing.assert_array_equal(y, labels)


@pytest.mark.parametrize(("name", "subdir"), [("mnist", "MNIST/raw"), ("fashion-mnist", "FashionMNIST/raw")])
def test_load_from_standard_subfolder(tmp_path: Path, name: str, subdir: str) -> None:
    images, labels = write_mnist(tmp_path / subdir, compress=True)["test"]
    ds = load_dataset(name, tmp_path, split="test", normalize=False)
    assert ds.name == name and ds.split == "test" and ds.num_classes == 10
    assert ds.x.dtype == torch.float32 and ds.x.shape == (N_TEST, 1, 28, 28)
    np.testing.assert_array_equal(ds.x[:, 0].numpy(), images.astype(np.float32) / np.float32(255))
    np.testing.assert_array_equal(ds.y.numpy(), labels)


def test_normalize_uses_training_statistics(tmp_path: Path) -> None:
    written = write_mnist(tmp_path, compress=False)
    train_pixels = written["train"][0] / 255.0
    mean, std = train_pixels.mean(), train_pixels.std()
    test = load_dataset("mnist", tmp_path, split="test", flatten=True)
    assert test.x.shape == (N_TEST, 784)
    expected = (written["test"][0].reshape(N_TEST, -1) / 255.0 - mean) / std
    np.testing.assert_allclose(test.x.numpy(), expected, rtol=0, atol=1e-6)
    train = load_dataset("mnist", tmp_path, split="train")
    assert abs(float(train.x.double().mean())) < 1e-6 and abs(float(train.x.double().std(unbiased=False)) - 1) < 1e-6


def test_missing_file(tmp_path: Path) -> None:
    write_mnist(tmp_path, compress=True)
    (tmp_path / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(DatasetNotFoundError) as info:
        read_mnist(tmp_path, "test")
    message = str(info.value)
    assert message.startswith(
        f"mnist: t10k-labels-idx1-ubyte or t10k-labels-idx1-ubyte.gz not found in {tmp_path} (searched {tmp_path})"
    )
    assert "Expected the files t10k-images-idx3-ubyte or t10k-images-idx3-ubyte.gz" in message
    assert "MNIST's four IDX files" in message
    assert info.value.path == tmp_path / "t10k-labels-idx1-ubyte"
    # The training files are still there and still load.
    assert read_mnist(tmp_path, "train")[0].shape == (N_TRAIN, 1, 28, 28)


def test_no_root_or_absent_root(tmp_path: Path) -> None:
    with pytest.raises(
        DatasetNotFoundError, match="fashion-mnist is read from files and no directory was given: pass root="
    ):
        load_dataset("fashion-mnist")
    with pytest.raises(
        DatasetNotFoundError, match=re.escape(f"mnist: the directory {tmp_path / 'nope'} does not exist")
    ):
        load_dataset("mnist", tmp_path / "nope")


def test_test_split_without_training_files(tmp_path: Path) -> None:
    write_mnist(tmp_path, compress=False)
    for name in ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"):
        (tmp_path / name).unlink()
    assert len(load_dataset("mnist", tmp_path, split="test", normalize=False)) == N_TEST
    with pytest.raises(DatasetNotFoundError, match="pass normalize=False to read only the test files of mnist"):
        load_dataset("mnist", tmp_path, split="test")


def test_count_mismatch(tmp_path: Path) -> None:
    write_mnist(tmp_path, compress=False)
    (tmp_path / "train-labels-idx1-ubyte").write_bytes(idx_ubyte(np.zeros(N_TRAIN - 2, np.uint8)))
    with pytest.raises(DatasetFileError) as info:
        read_mnist(tmp_path, "train")
    assert str(info.value).startswith(
        f"{tmp_path / 'train-labels-idx1-ubyte'}: {N_TRAIN - 2} labels "
        f"but train-images-idx3-ubyte holds {N_TRAIN} images"
    )
    assert "replace both with the originals" in str(info.value)


def test_swapped_files(tmp_path: Path) -> None:
    write_mnist(tmp_path, compress=False)
    images, labels = tmp_path / "t10k-images-idx3-ubyte", tmp_path / "t10k-labels-idx1-ubyte"
    images_data = images.read_bytes()
    images.write_bytes(labels.read_bytes())
    labels.write_bytes(images_data)
    with pytest.raises(DatasetFileError) as info:
        read_mnist(tmp_path, "test")
    message = str(info.value)
    assert message.startswith(f"{images}: an IDX array of uint8 with 1 dimensions [{N_TEST}], where images")
    assert "magic number 0x00000803" in message and "easily swapped" in message


def test_wrong_magic_and_truncation_name_the_file(tmp_path: Path) -> None:
    write_mnist(tmp_path, compress=True)
    path = tmp_path / "train-images-idx3-ubyte.gz"
    data = gzip.decompress(path.read_bytes())
    path.write_bytes(gzip.compress(b"\x08\x03\x00\x00" + data[4:]))
    with pytest.raises(DatasetFileError, match="^" + re.escape(f"{path}: wrong magic number 0x08030000")):
        read_mnist(tmp_path, "train")
    path.write_bytes(gzip.compress(data[:-100]))
    with pytest.raises(
        DatasetFileError, match="^" + re.escape(f"{path}: truncated: the header states {N_TRAIN}×28×28 values")
    ):
        read_mnist(tmp_path, "train")


def test_label_out_of_range(tmp_path: Path) -> None:
    write_mnist(tmp_path, compress=False)
    (tmp_path / "t10k-labels-idx1-ubyte").write_bytes(idx_ubyte(np.array([0, 1, 12, 3], np.uint8)))
    with pytest.raises(DatasetFileError, match=re.escape("label 12 out of range 0..9")):
        read_mnist(tmp_path, "test")


def test_uncompressed_preferred(tmp_path: Path) -> None:
    compressed = write_mnist(tmp_path, compress=True, seed=1)["test"]
    plain = write_mnist(tmp_path, compress=False, seed=2)["test"]
    x, _ = read_mnist(tmp_path, "test")
    np.testing.assert_array_equal(x[:, 0], plain[0])
    assert not np.array_equal(x[:, 0], compressed[0])
