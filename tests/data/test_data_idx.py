"""The IDX reader against files written byte by byte in the IDX format, gzip-compressed or not."""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np
import pytest

from pntk.data import DatasetFileError, read_idx

TYPE_CODES = {np.uint8: 0x08, np.int8: 0x09, np.int16: 0x0B, np.int32: 0x0C, np.float32: 0x0D, np.float64: 0x0E}


def idx_bytes(array: np.ndarray) -> bytes:
    """The IDX encoding: 0, 0, type code, ndim, sizes as big-endian uint32, values big-endian."""
    header = bytes([0, 0, TYPE_CODES[array.dtype.type], array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.astype(array.dtype.newbyteorder(">")).tobytes()


def write(path: Path, data: bytes, *, compress: bool = False) -> Path:
    path.write_bytes(gzip.compress(data) if compress else data)
    return path


@pytest.mark.parametrize("compress", [False, True])
@pytest.mark.parametrize("dtype", list(TYPE_CODES))
def test_round_trip_every_type(tmp_path: Path, dtype: type, compress: bool) -> None:
    rng = np.random.default_rng(0)
    array = (rng.standard_normal((3, 4, 5)) * 50).astype(dtype)
    path = write(tmp_path / "a-idx3", idx_bytes(array), compress=compress)
    out = read_idx(path)
    assert out.dtype == np.dtype(dtype) and out.dtype.isnative
    assert out.shape == (3, 4, 5)
    np.testing.assert_array_equal(out, array)


def test_known_bytes(tmp_path: Path) -> None:
    # int16 [2, 2] = [[1, -2], [256, 3]], big-endian.
    data = bytes([0, 0, 0x0B, 2, 0, 0, 0, 2, 0, 0, 0, 2, 0, 1, 0xFF, 0xFE, 1, 0, 0, 3])
    np.testing.assert_array_equal(read_idx(write(tmp_path / "x", data)), [[1, -2], [256, 3]])


def test_empty_array(tmp_path: Path) -> None:
    out = read_idx(write(tmp_path / "x", idx_bytes(np.zeros((0, 28, 28), np.uint8))))
    assert out.shape == (0, 28, 28)


def test_wrong_magic(tmp_path: Path) -> None:
    path = write(tmp_path / "images-idx3-ubyte", b"\x12\x34\x08\x03" + bytes(20))
    with pytest.raises(DatasetFileError, match="wrong magic number 0x12340803") as info:
        read_idx(path)
    assert str(path) in str(info.value) and "original file" in str(info.value)
    assert info.value.path == path


def test_unknown_type_code(tmp_path: Path) -> None:
    with pytest.raises(DatasetFileError, match=r"wrong magic number 0x00000701.*0x08 \(uint8\)"):
        read_idx(write(tmp_path / "x", bytes([0, 0, 7, 1, 0, 0, 0, 1, 5])))


@pytest.mark.parametrize("compress", [False, True])
def test_truncated_data(tmp_path: Path, compress: bool) -> None:
    data = idx_bytes(np.arange(24, dtype=np.int32).reshape(2, 3, 4))
    path = write(tmp_path / "labels", data[:-5], compress=compress)
    with pytest.raises(DatasetFileError) as info:
        read_idx(path)
    message = str(info.value)
    assert message.startswith(f"{path}: truncated: the header states 2×3×4 values of int32 (96 bytes) but 91 bytes")
    assert "Replace it with the original file" in message


def test_truncated_header(tmp_path: Path) -> None:
    with pytest.raises(DatasetFileError, match="truncated: 10 bytes, shorter than the 16-byte header of a 3-D"):
        read_idx(write(tmp_path / "x", bytes([0, 0, 8, 3, 0, 0, 0, 1, 0, 0])))
    with pytest.raises(DatasetFileError, match="truncated: 2 bytes, shorter than the 4-byte IDX magic"):
        read_idx(write(tmp_path / "y", bytes([0, 0])))


def test_too_long(tmp_path: Path) -> None:
    data = idx_bytes(np.arange(3, dtype=np.uint8)) + b"\x00"
    with pytest.raises(DatasetFileError, match=r"too long: the header states 3 values of uint8 \(3 bytes\) but 4"):
        read_idx(write(tmp_path / "x", data))


def test_truncated_gzip(tmp_path: Path) -> None:
    compressed = gzip.compress(idx_bytes((np.arange(1000) % 256).astype(np.uint8).reshape(10, 100)))
    path = write(tmp_path / "x.gz", compressed[: len(compressed) // 2])
    with pytest.raises(DatasetFileError, match="broken gzip stream, the file is truncated or corrupt") as info:
        read_idx(path)
    assert str(path) in str(info.value)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        read_idx(tmp_path / "absent")
