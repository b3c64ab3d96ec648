"""The kernel store: a kernel on disk as a plain Zarr v3 array, with provenance and a ledger of finished tiles.

Layout of a store ``k.zarr/``::

    zarr.json            array metadata; attributes hold the provenance (kind, N1, N2, O, dtype, engine,
                         tile, fingerprints, versions) and "complete"
    c/i/j[/0/0]          one chunk per tile (chunk edge = tile edge), raw little-endian numbers
    .pntk/lock           the writer's lock (fcntl.flock), released by the kernel when the writer dies
    .pntk/ledger/i-j     one small file per finished tile

Any Zarr, NumPy or Dask reader opens it (``zarr.open_array("k.zarr")``, ``dask.array.from_zarr("k.zarr")``);
tiles not computed yet read as NaN, the fill value.

A tile is marked finished only once its data is on disk: see ``[durability]`` below.
"""

from __future__ import annotations

import fcntl
import importlib.metadata
import json
import os
import re
import shutil
from dataclasses import asdict, dataclass, fields
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import torch
import zarr
from torch import Tensor

from .kernels import transpose_tile
from .kernels.kinds import Kind
from .tiling import Tile, tile_plan

# NOTE: [durability]
# A tile is written as chunk files (Zarr writes each to a temporary name and renames it), the chunk files and
# their directories are fsynced, and only then is its ledger entry written: to a temporary file, fsynced,
# renamed into place, directory fsynced. A SIGKILL (or power loss) at any moment therefore leaves either no
# ledger entry, and the tile is recomputed on resume, or an entry whose data is already on disk. The ledger is
# the only record of progress; the "complete" attribute is a convenience written at the end.

#: The value of the ``format`` attribute that marks a directory as a pntk kernel store.
FORMAT = "pntk-kernel-store/1"

_META = ".pntk"
_FINGERPRINTS = ("model", "data1", "data2")
_LEDGER_ENTRY = re.compile(r"(\d+)-(\d+)")


class StoreMismatchError(ValueError):
    """The store at ``out`` holds another computation (other model, data, kind, shape, ...)."""


class StoreLockedError(RuntimeError):
    """Another process is writing to the store."""


@dataclass(frozen=True)
class KernelSpec:
    """What a store holds: enough to refuse to mix tiles of two different computations.

    Attributes:
        kind: the kernel's :class:`Kind`.
        N1, N2: the numbers of rows and columns (samples of ``x1`` and ``x2``).
        O: the number of outputs of the network.
        dtype: the NumPy name of the numbers, e.g. ``"float32"``.
        symmetric: ``x2`` is ``x1``; only tiles with ``j ≥ i`` are computed, then mirrored.
        engine: the engine's name; ``None`` in a request means "whatever the store holds".
        tile: the tile (and chunk) edge; ``None`` in a request means "whatever the store holds".
        model: ``sha256:…`` of the model's tensors and module tree.
        data1: ``sha256:…`` of ``x1``.
        data2: ``sha256:…`` of ``x2``; ``None`` when symmetric.
    """

    kind: Kind
    N1: int
    N2: int
    O: int  # noqa: E741 - the maths' name
    dtype: str
    symmetric: bool
    engine: str | None
    tile: int | None
    model: str
    data1: str
    data2: str | None

    @property
    def shape(self) -> tuple[int, ...]:
        """``(N1, N2, O, O)`` for the eNTK, ``(N1, N2)`` otherwise."""
        return (self.N1, self.N2, self.O, self.O) if self.kind.is_matrix_valued else (self.N1, self.N2)

    def plan(self) -> list[Tile]:
        """Every tile of the kernel, in row-major order (upper ones only when symmetric)."""
        return tile_plan(self.N1, self.N2, self.tile, symmetric=self.symmetric)

    def differences(self, requested: KernelSpec) -> list[str]:
        """What ``requested`` asks for that this spec does not hold, one line each (``None`` fields match)."""
        lines = []
        for f in fields(self):
            mine, theirs = getattr(self, f.name), getattr(requested, f.name)
            if theirs is not None and mine != theirs:
                what = f"{f.name} fingerprint" if f.name in _FINGERPRINTS else f.name
                lines.append(f"{what}: store has {_show(mine)}, this call {_show(theirs)}")
        return lines

    def to_attrs(self) -> dict[str, Any]:
        """JSON attributes: ``format``, this spec (its fingerprints under ``fingerprints``), ``versions``,
        ``created`` and ``complete = False``."""
        attrs = {"format": FORMAT, **asdict(self), "kind": self.kind.value}
        attrs["fingerprints"] = {name: attrs.pop(name) for name in _FINGERPRINTS}
        attrs["versions"] = {p: _version(p) for p in ("pntk", "torch", "zarr")}
        attrs["created"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
        attrs["complete"] = False
        return attrs

    @staticmethod
    def from_attrs(attrs: dict[str, Any]) -> KernelSpec:
        values = {**attrs, **attrs["fingerprints"], "kind": Kind(attrs["kind"])}
        return KernelSpec(**{f.name: values[f.name] for f in fields(KernelSpec)})


class KernelStore:
    """A kernel in a Zarr store: reads like an array, knows which tiles are finished.

    Obtained from :func:`open` (read-only) or :func:`pntk.compute`. Indexing reads from disk and returns
    NumPy arrays; ``np.asarray(store)`` reads everything.

    Example:
        >>> import tempfile, torch, pntk
        >>> net = torch.nn.Sequential(torch.nn.Linear(3, 8), torch.nn.Tanh(), torch.nn.Linear(8, 2)).eval()
        >>> out = tempfile.mkdtemp() + "/k.zarr"
        >>> K = pntk.compute(net, torch.randn(10, 3), kind="pntk", out=out, tile=4)
        >>> K.shape, K.complete, len(K.missing_tiles), K[:2, :3].shape
        ((10, 10), True, 0, (2, 3))
    """

    def __init__(self, path: str | os.PathLike, *, writable: bool = False):
        self.path = Path(path)
        if not (self.path / "zarr.json").is_file():
            raise FileNotFoundError(f"{self.path} is not a kernel store (no zarr.json there)")
        array = zarr.open_array(str(self.path), mode="r+" if writable else "r")
        attrs = array.attrs.asdict()
        if attrs.get("format") != FORMAT:
            raise ValueError(
                f"{self.path} is a Zarr array but not a pntk kernel store (its 'format' attribute is "
                f"{attrs.get('format')!r}, not {FORMAT!r})"
            )
        # A tile equal to the fill value must still be written as a chunk file, to be fsynced.
        self.array = array.with_config({"write_empty_chunks": True}) if writable else array
        self.spec = KernelSpec.from_attrs(attrs)

    @classmethod
    def create(cls, path: str | os.PathLike, spec: KernelSpec) -> KernelStore:
        """A new, empty store for ``spec`` at ``path``, replacing any store there (but not its lock).

        Everything in ``path`` is deleted: check first with :func:`read_spec` that it holds a kernel store
        or nothing, and hold its :class:`StoreLock`.
        """
        path = Path(path)
        for entry in path.iterdir() if path.is_dir() else ():
            if entry.name != _META:
                shutil.rmtree(entry) if entry.is_dir() else entry.unlink()
        shutil.rmtree(path / _META / "ledger", ignore_errors=True)
        zarr.create_array(
            str(path),
            shape=spec.shape,
            chunks=(spec.tile, spec.tile, *spec.shape[2:]),
            dtype=spec.dtype,
            fill_value=float("nan"),
            # Kernel entries are dense floats that hardly compress; raw chunks keep writes at disk speed.
            compressors=None,
            dimension_names=("n1", "n2", "a", "b")[: len(spec.shape)],
            attributes=spec.to_attrs(),
        )
        (path / _META / "ledger").mkdir(parents=True, exist_ok=True)
        _fsync_tree(path / "zarr.json", path)
        _fsync_tree(path / _META / "ledger", path)
        return cls(path, writable=True)

    # --- reading -----------------------------------------------------------------------------------------

    @property
    def attrs(self) -> dict[str, Any]:
        """The provenance attributes (a copy)."""
        return self.array.attrs.asdict()

    @property
    def kind(self) -> Kind:
        return self.spec.kind

    @property
    def shape(self) -> tuple[int, ...]:
        """``(N1, N2, O, O)`` for the eNTK, ``(N1, N2)`` otherwise."""
        return self.array.shape

    @property
    def dtype(self) -> np.dtype:
        return self.array.dtype

    @property
    def ndim(self) -> int:
        return len(self.shape)

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, key) -> np.ndarray:
        return self.array[key]

    def numpy(self) -> np.ndarray:
        """The whole kernel in memory."""
        return self.array[...]

    def __array__(self, dtype=None, copy=None) -> np.ndarray:
        values = self.numpy()
        return values if dtype is None else values.astype(dtype, copy=False)

    def finished_tiles(self) -> set[tuple[int, int]]:
        """The ``(i, j)`` of every tile recorded in the ledger (durably written)."""
        try:
            names = os.listdir(self.path / _META / "ledger")
        except FileNotFoundError:
            return set()
        return {(int(m[1]), int(m[2])) for m in map(_LEDGER_ENTRY.fullmatch, names) if m}

    @property
    def missing_tiles(self) -> list[Tile]:
        """Tiles of the plan not finished yet, in row-major order."""
        done = self.finished_tiles()
        return [t for t in self.spec.plan() if (t.i, t.j) not in done]

    @property
    def complete(self) -> bool:
        """Whether every tile is finished, according to the ledger."""
        return not self.missing_tiles

    @property
    def nbytes(self) -> int:
        """The size of the kernel in memory."""
        return self.array.nbytes

    def size_on_disk(self) -> int:
        """Bytes of all files of the store."""
        return sum(f.stat().st_size for f in self.path.rglob("*") if f.is_file())

    def operator(
        self,
        *,
        memory: int | str | None = None,
        dtype: torch.dtype | None = None,
        device: torch.device | str = "cpu",
        progress: bool | None = None,
    ):
        """This kernel as a linear operator that streams its tiles: :class:`pntk.operators.StoreOperator`."""
        from .operators.store import StoreOperator

        return StoreOperator(self, memory=memory, dtype=dtype, device=device, progress=progress)

    def __matmul__(self, V):
        """``K @ V``, streaming the tiles under the default memory budget (see :meth:`operator`)."""
        return self.operator() @ V

    def __repr__(self) -> str:
        state = "complete" if self.complete else f"{len(self.missing_tiles)} tiles missing"
        return f"KernelStore({str(self.path)!r}, kind={self.kind.value!r}, shape={self.shape}, {state})"

    # --- writing -----------------------------------------------------------------------------------------

    def write_tile(self, tile: Tile, values: Tensor, *, rank: int = 0, seconds: float = 0.0) -> None:
        """Write one tile (and its mirror image when symmetric) durably, then record it in the ledger.

        Args:
            tile: a tile of :meth:`KernelSpec.plan`.
            values: ``[B1, B2, O, O]`` or ``[B1, B2]``, on any device.
            rank, seconds: who computed it and how long it took, kept in the ledger entry.
        """
        values = values.cpu()
        self.array[tile.rows, tile.cols] = values.numpy()
        chunks = [(tile.i, tile.j)]
        if self.spec.symmetric and not tile.on_diagonal:
            self.array[tile.cols, tile.rows] = transpose_tile(values).contiguous().numpy()  # torch transposes faster
            chunks.append((tile.j, tile.i))
        for i, j in chunks:
            key = self.array.metadata.encode_chunk_key((i, j) + (0,) * (self.ndim - 2))
            _fsync_tree(self.path / key, self.path)
        self._record(tile, {"rank": rank, "seconds": round(seconds, 6)})  # see [durability]

    def _record(self, tile: Tile, entry: dict[str, Any]) -> None:
        ledger = self.path / _META / "ledger"
        final = ledger / f"{tile.i}-{tile.j}"
        temporary = ledger / f".{final.name}.{os.getpid()}.tmp"
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            os.write(fd, json.dumps(entry).encode())
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(temporary, final)
        _fsync(ledger)

    def discard_partial_writes(self) -> int:
        """Delete what writers killed mid-write left: Zarr's ``*.partial`` chunk files, ledger temporaries.

        Only safe while no process writes to the store.

        Returns:
            The number of files deleted.
        """
        leftovers = [*(self.path / "c").rglob("*.partial"), *(self.path / _META / "ledger").glob(".*.tmp")]
        for f in leftovers:
            f.unlink(missing_ok=True)
        return len(leftovers)

    def mark_complete(self) -> None:
        """Set the ``complete`` attribute (for readers that do not read the ledger).

        Raises:
            RuntimeError: tiles are missing.
        """
        missing = self.missing_tiles
        if missing:
            raise RuntimeError(f"{self.path} still misses {len(missing)} tiles; it is not complete")
        self.array.attrs["complete"] = True
        _fsync_tree(self.path / "zarr.json", self.path)


def open(path: str | os.PathLike) -> KernelStore:  # noqa: A001 - pntk.open mirrors zarr.open
    """Open a kernel store read-only.

    Args:
        path: the store's directory, e.g. ``"k.zarr"``.

    Returns:
        A :class:`KernelStore`: ``K[i0:i1, j0:j1]``, ``K.shape``, ``K.numpy()``, ``K.complete``,
        ``K.missing_tiles``, ``K.attrs``.

    Raises:
        FileNotFoundError: no store at ``path``.
        ValueError: a Zarr array not written by pntk.
    """
    return KernelStore(path)


def read_spec(path: str | os.PathLike) -> KernelSpec | None:
    """The spec of the store at ``path``; ``None`` if there is no store (an empty or missing directory).

    Raises:
        FileExistsError: ``path`` is a file, a non-empty directory that is no Zarr store, or a Zarr store
            not written by pntk; none of them is replaced.
    """
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise FileExistsError(f"{path} is a file, not a kernel store; choose another out path")
    if not path.exists() or not {p.name for p in path.iterdir()} - {_META}:
        return None
    try:
        return KernelStore(path).spec
    except (FileNotFoundError, ValueError, KeyError) as err:
        raise FileExistsError(
            f"{path} exists and is not a pntk kernel store ({err}); choose another out path"
        ) from None


class StoreLock:
    """An exclusive lock on a store, ``fcntl.flock`` on ``.pntk/lock``; the kernel drops it when its holder dies.

    Raises:
        StoreLockedError: another process holds it.
    """

    def __init__(self, path: str | os.PathLike):
        meta = Path(path) / _META
        meta.mkdir(parents=True, exist_ok=True)
        self._fd = os.open(meta / "lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(self._fd, 64, 0).decode(errors="replace").strip() or "?"
            os.close(self._fd)
            raise StoreLockedError(
                f"another process (pid {holder}) is writing to {path}; wait for it to finish or stop it, or "
                "choose another out path. To compute one kernel with several processes, start them with "
                "torchrun, which shares the tiles"
            ) from None
        os.ftruncate(self._fd, 0)
        os.pwrite(self._fd, str(os.getpid()).encode(), 0)

    def release(self) -> None:
        """Drop the lock (closing the file releases the flock)."""
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_tree(path: Path, root: Path) -> None:
    """fsync ``path`` and every directory from its parent up to ``root``, so that its name is durable too."""
    _fsync(path)
    while path != root:
        path = path.parent
        _fsync(path)


def _show(value: Any) -> str:
    if isinstance(value, Kind):
        return repr(value.value)
    if isinstance(value, str) and value.startswith("sha256:"):
        return value[:19] + "…"
    return repr(value)


def _version(package: str) -> str:
    if package == "torch":
        return torch.__version__
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return "unknown"
