"""The IDX file format of MNIST and Fashion-MNIST, gzip-compressed or not.

An IDX file is a header and then the values in row-major (C) order, big-endian:

- the magic number, 4 bytes: two zero bytes, a type code (below), the number of dimensions ``d``;
- ``d`` sizes, each an unsigned 32-bit big-endian integer;
- ``prod(sizes)`` values of the type.

MNIST's images are ``0x00000803`` (unsigned bytes, 3 dimensions ``[N, 28, 28]``), its labels
``0x00000801`` (unsigned bytes, ``[N]``).
"""

from __future__ import annotations

import gzip
import zlib
from pathlib import Path

import numpy as np

from pntk.data.errors import DatasetFileError

#: IDX type codes and the (big-endian) NumPy types they stand for.
IDX_TYPES: dict[int, np.dtype] = {
    0x08: np.dtype(np.uint8),
    0x09: np.dtype(np.int8),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}

_GZIP_MAGIC = b"\x1f\x8b"
_REMEDY = "Replace it with the original file, as distributed (gzip-compressed or not)"


def read_idx(path: str | Path) -> np.ndarray:
    """Read an IDX file, gzip-compressed or not (told by its content, not its name).

    Args:
        path: the file.

    Returns:
        The array, of the shape the header states and the native-endian type of its type code.

    Raises:
        FileNotFoundError: no such file.
        DatasetFileError: a broken gzip stream, a wrong magic number, an unknown type code, or fewer or more
            bytes than the header states.

    Example:
        >>> import tempfile, os
        >>> path = os.path.join(tempfile.mkdtemp(), "labels-idx1-ubyte")
        >>> with open(path, "wb") as f:
        ...     _ = f.write(bytes([0, 0, 8, 1, 0, 0, 0, 3, 7, 2, 1]))
        >>> read_idx(path)
        array([7, 2, 1], dtype=uint8)
    """
    path = Path(path)
    raw = path.read_bytes()
    if raw[:2] == _GZIP_MAGIC:
        try:
            raw = gzip.decompress(raw)
        except (EOFError, OSError, zlib.error) as error:
            raise DatasetFileError(
                path, f"broken gzip stream, the file is truncated or corrupt ({error})", _REMEDY
            ) from error

    if len(raw) < 4:
        raise DatasetFileError(path, f"truncated: {len(raw)} bytes, shorter than the 4-byte IDX magic number", _REMEDY)
    if raw[0] != 0 or raw[1] != 0 or raw[2] not in IDX_TYPES:
        codes = ", ".join(f"0x{code:02X} ({dtype.name})" for code, dtype in IDX_TYPES.items())
        raise DatasetFileError(
            path,
            f"wrong magic number 0x{raw[:4].hex().upper()}: not an IDX file, whose magic number is two zero bytes, "
            f"a type code ({codes}) and the number of dimensions",
            _REMEDY,
        )
    dtype, ndim = IDX_TYPES[raw[2]], raw[3]
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DatasetFileError(
            path, f"truncated: {len(raw)} bytes, shorter than the {header}-byte header of a {ndim}-D IDX file", _REMEDY
        )
    shape = tuple(int(s) for s in np.frombuffer(raw, dtype=">u4", count=ndim, offset=4))
    expected = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    body = len(raw) - header
    if body != expected:
        problem = "truncated" if body < expected else "too long"
        raise DatasetFileError(
            path,
            f"{problem}: the header states {'×'.join(map(str, shape))} values of {dtype.name} ({expected} bytes) "
            f"but {body} bytes follow it",
            _REMEDY,
        )
    return np.frombuffer(raw, dtype=dtype, offset=header).reshape(shape).astype(dtype.newbyteorder("="))
