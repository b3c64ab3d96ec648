"""CIFAR-10 and CIFAR-100 from small files written in exactly the binary version's record format."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from pntk.data import DatasetFileError, DatasetNotFoundError, load_dataset, read_cifar10, read_cifar100, train_test

TRAIN_SIZES = (3, 2, 1, 2, 2)  # records in data_batch_1.bin .. data_batch_5.bin
N_TEST = 3


def records(labels: np.ndarray, images: np.ndarray) -> bytes:
    """Label byte(s) then 3072 pixel bytes (red plane, green plane, blue plane, each row-major) per image."""
    return np.concatenate([labels.reshape(len(images), -1), images.reshape(len(images), -1)], axis=1).tobytes()


def write_cifar10(directory: Path, seed: int = 0) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    rng = np.random.default_rng(seed)
    directory.mkdir(parents=True, exist_ok=True)
    parts = {}
    names = [f"data_batch_{k}.bin" for k in range(1, 6)] + ["test_batch.bin"]
    for name, n in zip(names, (*TRAIN_SIZES, N_TEST), strict=True):
        labels = rng.integers(0, 10, n, dtype=np.uint8)
        images = rng.integers(0, 256, (n, 3, 32, 32), dtype=np.uint8)
        (directory / name).write_bytes(records(labels, images))
        parts[name] = (images, labels)
    train = [parts[name] for name in names[:5]]
    return {
        "train": (np.concatenate([x for x, _ in train]), np.concatenate([y for _, y in train])),
        "test": parts["test_batch.bin"],
    }


def write_cifar100(directory: Path, seed: int = 0) -> dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]:
    rng = np.random.default_rng(seed)
    directory.mkdir(parents=True, exist_ok=True)
    written = {}
    for split, n in (("train", 5), ("test", 2)):
        coarse = rng.integers(0, 20, n, dtype=np.uint8)
        fine = rng.integers(0, 100, n, dtype=np.uint8)
        images = rng.integers(0, 256, (n, 3, 32, 32), dtype=np.uint8)
        (directory / f"{split}.bin").write_bytes(records(np.stack([coarse, fine], axis=1), images))
        written[split] = (images, coarse, fine)
    return written


def test_record_layout(tmp_path: Path) -> None:
    record = np.zeros(1 + 3072, np.uint8)
    record[0] = 6
    record[1 + 0 * 1024 + 0 * 32 + 1] = 7  # red, row 0, column 1
    record[1 + 1 * 1024 + 2 * 32 + 3] = 9  # green, row 2, column 3
    record[1 + 2 * 1024 + 31 * 32 + 31] = 200  # blue, row 31, column 31
    (tmp_path / "test_batch.bin").write_bytes(record.tobytes())
    images, labels = read_cifar10(tmp_path, "test")
    assert images.shape == (1, 3, 32, 32) and labels.tolist() == [6]
    assert images[0, 0, 0, 1] == 7 and images[0, 1, 2, 3] == 9 and images[0, 2, 31, 31] == 200
    assert int(images.sum()) == 7 + 9 + 200


@pytest.mark.parametrize("subdir", ["", "cifar-10-batches-bin"])
def test_cifar10_exact(tmp_path: Path, subdir: str) -> None:
    written = write_cifar10(tmp_path / subdir)
    for split, (images, labels) in written.items():
        x, y = read_cifar10(tmp_path, split)
        assert x.dtype == np.uint8 and y.dtype == np.int64
        np.testing.assert_array_equal(x, images)
        np.testing.assert_array_equal(y, labels)
    ds = load_dataset("cifar10", tmp_path, split="all", normalize=False)
    assert ds.x.shape == (sum(TRAIN_SIZES) + N_TEST, 3, 32, 32) and ds.num_classes == 10 and ds.split == "all"
    expected = np.concatenate([written["train"][0], written["test"][0]]).astype(np.float32) / np.float32(255)
    np.testing.assert_array_equal(ds.x.numpy(), expected)
    np.testing.assert_array_equal(ds.y.numpy(), np.concatenate([written["train"][1], written["test"][1]]))


def test_cifar10_per_channel_normalisation(tmp_path: Path) -> None:
    written = write_cifar10(tmp_path)
    pixels = written["train"][0] / 255.0
    mean, std = pixels.mean(axis=(0, 2, 3)), pixels.std(axis=(0, 2, 3))
    train, test = train_test("cifar10", tmp_path, flatten=True)
    assert train.x.shape == (sum(TRAIN_SIZES), 3072) and test.x.shape == (N_TEST, 3072)
    per_channel = train.x.double().reshape(-1, 3, 1024)
    torch.testing.assert_close(per_channel.mean(dim=(0, 2)), torch.zeros(3, dtype=torch.float64), rtol=0, atol=1e-6)
    torch.testing.assert_close(
        per_channel.std(dim=(0, 2), unbiased=False), torch.ones(3, dtype=torch.float64), rtol=0, atol=1e-6
    )
    expected = (written["test"][0] / 255.0 - mean[:, None, None]) / std[:, None, None]
    np.testing.assert_allclose(test.x.numpy(), expected.reshape(N_TEST, -1), rtol=0, atol=2e-6)
    # train_test and load_dataset give the very same tensors.
    assert torch.equal(load_dataset("cifar10", tmp_path, split="test", flatten=True).x, test.x)


@pytest.mark.parametrize("subdir", ["", "cifar-100-binary"])
def test_cifar100_exact(tmp_path: Path, subdir: str) -> None:
    written = write_cifar100(tmp_path / subdir)
    for split, (images, coarse, fine) in written.items():
        x, y = read_cifar100(tmp_path, split)
        np.testing.assert_array_equal(x, images)
        np.testing.assert_array_equal(y, fine)
        np.testing.assert_array_equal(read_cifar100(tmp_path, split, labels="coarse")[1], coarse)
    ds = load_dataset("cifar100", tmp_path, split="test", normalize=False)
    assert ds.num_classes == 100 and ds.x.shape == (2, 3, 32, 32)
    np.testing.assert_array_equal(ds.x.numpy(), written["test"][0].astype(np.float32) / np.float32(255))
    np.testing.assert_array_equal(ds.y.numpy(), written["test"][2])
    assert ds.targets().shape == (2, 100)


def test_truncated_file(tmp_path: Path) -> None:
    write_cifar10(tmp_path)
    path = tmp_path / "data_batch_3.bin"
    path.write_bytes(path.read_bytes()[:-1])
    with pytest.raises(DatasetFileError) as info:
        read_cifar10(tmp_path, "train")
    message = str(info.value)
    assert message.startswith(
        f"{path}: 3072 bytes is not a whole, positive number of 3073-byte records "
        f"(1 label byte + 3072 pixel bytes): the file is truncated"
    )
    assert "cifar-10-binary.tar.gz" in message and info.value.path == path


def test_cifar100_truncated_and_label_out_of_range(tmp_path: Path) -> None:
    write_cifar100(tmp_path)
    path = tmp_path / "test.bin"
    data = bytearray(path.read_bytes())
    path.write_bytes(bytes(data[:3000]))
    with pytest.raises(DatasetFileError, match="3000 bytes is not a whole, positive number of 3074-byte records"):
        read_cifar100(tmp_path, "test")
    data[1] = 100  # the fine label of the first record
    path.write_bytes(bytes(data))
    with pytest.raises(DatasetFileError, match=r"label 100 in label byte 2 of a record, out of range 0\.\.99"):
        read_cifar100(tmp_path, "test")


def test_cifar10_file_of_cifar100_is_refused(tmp_path: Path) -> None:
    record = np.zeros(2 * 3073, np.uint8)
    record[0] = 37
    (tmp_path / "test_batch.bin").write_bytes(record.tobytes())
    with pytest.raises(DatasetFileError, match=r"label 37 in label byte 1 of a record, out of range 0\.\.9"):
        read_cifar10(tmp_path, "test")


def test_missing_file(tmp_path: Path) -> None:
    write_cifar10(tmp_path / "cifar-10-batches-bin")
    (tmp_path / "cifar-10-batches-bin" / "data_batch_4.bin").unlink()
    with pytest.raises(DatasetNotFoundError) as info:
        load_dataset("cifar10", tmp_path)
    message = str(info.value)
    folder = tmp_path / "cifar-10-batches-bin"
    assert message.startswith(f"cifar10: data_batch_4.bin not found in {folder} (searched {tmp_path} and {folder})")
    assert "data_batch_1.bin, data_batch_2.bin" in message and "binary version of CIFAR-10" in message
    assert "Python version" not in message


def test_python_version_is_named_and_never_read(tmp_path: Path) -> None:
    (tmp_path / "cifar-10-batches-py").mkdir()
    (tmp_path / "cifar-10-batches-py" / "data_batch_1").write_bytes(b"not read")
    with pytest.raises(DatasetNotFoundError, match=r"Found the Python version .* never loaded"):
        read_cifar10(tmp_path, "train")
    (tmp_path / "cifar-100-python").mkdir()
    with pytest.raises(
        DatasetNotFoundError, match=r"test\.bin not found .* Found the Python version \(cifar-100-python\)"
    ):
        read_cifar100(tmp_path, "test")


def test_bad_split_and_label_kind(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="split must be 'train' or 'test' to read files, got 'all'"):
        read_cifar10(tmp_path, "all")
    with pytest.raises(ValueError, match="labels must be 'fine' or 'coarse', got 'medium'"):
        read_cifar100(tmp_path, "train", labels="medium")
