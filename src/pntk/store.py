"""The kernel store: a kernel on disk as a plain Zarr v3 array, with provenance and a ledger of finished tiles.

Layout of a store ``k.zarr/``::

    zarr.json            array metadata; attributes hold the spec (kind, N1, N2, O, dtype, engine, tile,
                         fingerprints, versions), "complete", and the caller's "provenance" record
    c/i/j[/0/0]          one chunk per tile (chunk edge = tile edge), raw little-endian numbers
    .pntk/lock           the writer's lock (fcntl.flock), released by the kernel when the writer dies
    .pntk/ledger/i-j     one small file per finished tile: its chunks' sizes and CRC32C checksums

Any Zarr, NumPy or Dask reader opens it (``zarr.open_array("k.zarr")``, ``dask.array.from_zarr("k.zarr")``);
tiles not computed yet read as NaN, the fill value.

A tile is marked finished only once its data is on disk: see ``[durability]`` below. Nothing damaged is ever
served: see ``[checksums]``.
"""

from __future__ import annotations

import dataclasses
import errno
import importlib.metadata
import json
import math
import os
import re
import shutil
from collections.abc import Mapping
from dataclasses import MISSING, asdict, dataclass, fields
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, ClassVar, TypeVar, cast

import google_crc32c
import numpy as np
import torch
import zarr
from torch import Tensor
from zarr.codecs import Crc32cCodec

from .errors import StoreCorruptError, StoreError, StoreLockedError, StoreMismatchError
from .kernels import transpose_tile
from .kernels.kinds import Kind
from .tiling import Tile, format_bytes, tile_plan

# NOTE: [durability]
# A tile is written as chunk files (Zarr writes each to a temporary name and renames it), the chunk files and
# their directories are fsynced, and only then is its ledger entry written: to a temporary file, fsynced,
# renamed into place, directory fsynced. A SIGKILL (or power loss) at any moment therefore leaves either no
# ledger entry, and the tile is recomputed on resume, or an entry whose data is already on disk. The ledger is
# the only record of progress; the "complete" attribute is a convenience written at the end.

# NOTE: [checksums]
# Every chunk ends with the CRC32C of its bytes (Zarr's standard "crc32c" codec, so that any Zarr reader checks
# it too), and the tile's ledger entry records each of its chunks' size and checksum as written. A chunk is
# intact when its file exists, has the recorded size, and its bytes give the checksum that it ends with and that
# the ledger recorded (the last check catches a valid chunk of another tile or store copied over it). Reads
# check the chunks they touch (Zarr verifies the bytes as it decodes them; the size and presence are checked
# here, since Zarr reads a missing chunk as the fill value); a resumed computation and `pntk verify` check every
# finished tile. A damaged tile loses its ledger entry and is computed again. A lost or unreadable ledger
# entry is rebuilt from chunks whose own checksums hold.

#: Formats pntk recognises but cannot vouch for (no checksums).
_OLD_FORMATS = ("pntk-kernel-store/1",)

_META = ".pntk"
_LEDGER_ENTRY = re.compile(r"(\d+)-(\d+)")
_CHECKSUM_BYTES = 4
_READ_BLOCK = 8 << 20  # bytes read at a time when a chunk is checked
_FULL_DISK = (errno.ENOSPC, errno.EDQUOT)
_READ_ONLY = (errno.EROFS, errno.EACCES, errno.EPERM)

__all__ = [
    "FORMAT",
    "KernelSpec",
    "ChunkedStore",
    "KernelStore",
    "StoreCorruptError",
    "StoreError",
    "StoreLock",
    "StoreLockedError",
    "StoreMismatchError",
    "StoreSpec",
    "TileDamage",
    "VerifyReport",
    "open",
    "read_spec",
    "store_type",
]


_Spec = TypeVar("_Spec", bound="StoreSpec")
_Store = TypeVar("_Store", bound="ChunkedStore")


class StoreSpec:
    """What a chunked store holds, in common to kernel and feature stores: the attributes it is written as,
    its tiles and chunks, and how a request differs from it.

    Subclasses are frozen dataclasses with fields ``kind``, ``dtype``, ``tile``, ``model``, ``behaviour`` and
    the fingerprints of their inputs, and set :attr:`FORMAT`, :attr:`FINGERPRINTS` and :attr:`PROBED`.
    """

    #: The value of the ``format`` attribute of such a store.
    FORMAT: ClassVar[str]
    #: The fields that are ``sha256:…`` fingerprints (kept under the ``fingerprints`` attribute).
    FINGERPRINTS: ClassVar[tuple[str, ...]]
    #: The fingerprint of the inputs the behaviour probe ran on.
    PROBED: ClassVar[str]
    #: The fields that record a selection (which parameters, which outputs): compared only when both specs
    #: record one, since a store made before they were recorded has none.
    SELECTIONS: ClassVar[tuple[str, ...]] = ()

    kind: Kind
    dtype: str
    tile: int | None
    model: str

    @property
    def shape(self) -> tuple[int, ...]:
        """The shape of the stored array."""
        raise NotImplementedError(f"{type(self).__name__} must define its shape")

    @property
    def chunks(self) -> tuple[int, ...]:
        """The shape of one chunk of the stored array."""
        raise NotImplementedError(f"{type(self).__name__} must define its chunks")

    @property
    def dimension_names(self) -> tuple[str, ...]:
        """Zarr's names of the array's axes."""
        raise NotImplementedError(f"{type(self).__name__} must name its axes")

    def plan(self) -> list[Tile]:
        """Every tile the store is written as, in the order they are computed."""
        raise NotImplementedError(f"{type(self).__name__} must define its tiles")

    def differences(self, requested: StoreSpec) -> list[str]:
        """What ``requested`` asks for that this spec does not hold, one line each (``None`` fields match)."""
        from .probe import behaviour_difference  # the probe needs the kernels package, which needs nothing here

        lines = []
        for f in fields(self):  # type: ignore[arg-type]  # subclasses are dataclasses
            mine, theirs = getattr(self, f.name), getattr(requested, f.name)
            if f.name == "behaviour":
                # Only news when the weights and the probe inputs agree: they change the outputs too.
                probed = self.PROBED
                same_model = self.model == requested.model and getattr(self, probed) == getattr(requested, probed)
                if same_model and mine is not None and theirs is not None:
                    difference = behaviour_difference(mine, theirs)
                    if difference:
                        lines.append(f"model behaviour: {difference}")
            elif f.name in self.SELECTIONS:
                # Compared when both specs record their selection ("params" is recorded by every new spec; an
                # "output" of None is the output itself), since a store made before has none.
                recorded = all(getattr(spec, "params", None) is not None for spec in (self, requested))
                if recorded and mine != theirs:
                    lines.append(f"{f.name} selection: store has {mine or 'none'}, this call {theirs or 'none'}")
            elif theirs is not None and mine != theirs:
                what = f"{f.name} fingerprint" if f.name in self.FINGERPRINTS else f.name
                lines.append(f"{what}: store has {_show(mine)}, this call {_show(theirs)}")
        return lines

    def to_attrs(self) -> dict[str, Any]:
        """JSON attributes: ``format``, this spec (its fingerprints under ``fingerprints``), ``versions``,
        ``created`` and ``complete = False``."""
        attrs = {"format": self.FORMAT, **asdict(self), "kind": self.kind.value}  # type: ignore[call-overload]
        attrs["fingerprints"] = {name: attrs.pop(name) for name in (*self.FINGERPRINTS, "behaviour")}
        attrs["versions"] = {p: _version(p) for p in ("pntk", "torch", "zarr")}
        attrs["created"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
        attrs["complete"] = False
        return attrs

    @classmethod
    def from_attrs(cls: type[_Spec], attrs: dict[str, Any]) -> _Spec:
        """The spec a store's attributes describe."""
        # Fields added since a store was made take their defaults.
        defaults = {f.name: f.default for f in fields(cls) if f.default is not MISSING}  # type: ignore[arg-type]
        values = {**defaults, **attrs, **attrs["fingerprints"], "kind": Kind(attrs["kind"])}
        return cls(**{f.name: values[f.name] for f in fields(cls)})  # type: ignore[arg-type]


@dataclass(frozen=True)
class KernelSpec(StoreSpec):
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
        behaviour: the model's outputs and a directional derivative on a probe batch
            (:func:`pntk.probe.behaviour`, as JSON); compared with a tolerance, not bit for bit. ``None`` in a
            request means "not checked".
        params: the differentiated parameters (``params=``): their number and a digest of their names
            (:func:`pntk.kernels.selection.params_key`). ``None`` in a store made before it was recorded: not
            compared (the model fingerprint still tells differentiated tensors apart).
        output: what of the model's output the kernel is of (``output=``,
            :func:`pntk.kernels.outputs.output_key`); ``None`` for the output itself (or a store made before
            it was recorded).
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
    behaviour: dict[str, Any] | None = None
    params: str | None = None
    output: str | None = None

    FORMAT: ClassVar[str] = "pntk-kernel-store/2"
    FINGERPRINTS: ClassVar[tuple[str, ...]] = ("model", "data1", "data2")
    PROBED: ClassVar[str] = "data1"
    SELECTIONS: ClassVar[tuple[str, ...]] = ("params", "output")

    @property
    def shape(self) -> tuple[int, ...]:
        """``(N1, N2, O, O)`` for the eNTK, ``(N1, N2)`` otherwise."""
        return (self.N1, self.N2, self.O, self.O) if self.kind.is_matrix_valued else (self.N1, self.N2)

    @property
    def chunks(self) -> tuple[int, ...]:
        """A tile: ``(tile, tile, O, O)`` for the eNTK, ``(tile, tile)`` otherwise."""
        assert self.tile is not None, "a request's spec has no chunks until the tile is chosen"
        return (self.tile, self.tile, *self.shape[2:])

    @property
    def dimension_names(self) -> tuple[str, ...]:
        return ("n1", "n2", "a", "b")[: len(self.shape)]

    def plan(self) -> list[Tile]:
        """Every tile of the kernel, in row-major order (upper ones only when symmetric)."""
        assert self.tile is not None, "a request's spec has no tile plan until the tile is chosen"
        return tile_plan(self.N1, self.N2, self.tile, symmetric=self.symmetric)


#: The value of the ``format`` attribute that marks a directory as a pntk kernel store.
FORMAT = KernelSpec.FORMAT


@dataclass(frozen=True)
class TileDamage:
    """One finished tile whose data cannot be vouched for.

    Attributes:
        i, j: the tile's indices in the grid of tiles.
        chunk: the chunk file, relative to the store (``"c/0/1"``), or ``""`` for the ledger entry.
        problem: ``"missing"``, ``"truncated"``, ``"damaged"`` (checksum mismatch) or ``"ledger entry
            unreadable"``.
    """

    i: int
    j: int
    chunk: str
    problem: str

    def __str__(self) -> str:
        where = f" (chunk {self.chunk})" if self.chunk else ""
        return f"tile ({self.i}, {self.j}){where}: {self.problem}"


@dataclass(frozen=True)
class VerifyReport:
    """What :meth:`KernelStore.verify` found.

    Attributes:
        checked: finished tiles whose chunks were read and checked.
        damage: the damaged, truncated or missing chunks of finished tiles (a tile may appear twice).
        missing: tiles never finished (still to compute), beyond the damaged ones.
        rebuilt: ledger entries rebuilt from chunks whose own checksums hold (by :meth:`KernelStore.repair`).
    """

    checked: int
    damage: list[TileDamage]
    missing: int
    rebuilt: int = 0

    @property
    def ok(self) -> bool:
        """No finished tile is damaged (tiles still to compute do not count)."""
        return not self.damage

    @property
    def damaged_tiles(self) -> list[tuple[int, int]]:
        """The ``(i, j)`` of every damaged tile, sorted, once each."""
        return sorted({(d.i, d.j) for d in self.damage})


class ChunkedStore:
    """An array in a Zarr store written tile by tile: the ledger of finished tiles, the checksums of their
    chunks, reads that refuse damaged data, repair and verification. Kernel stores (:class:`KernelStore`) and
    feature stores (:class:`pntk.features.FeatureStore`) are ones; a subclass names its spec type and format
    and says which chunks a tile writes.
    """

    #: The spec type of such stores, whose ``FORMAT`` marks them.
    SPEC: ClassVar[type[StoreSpec]]
    #: What such a store holds, for messages.
    WHAT: ClassVar[str] = "store"
    #: The call that computes a damaged tile again, for messages.
    RERUN: ClassVar[str] = "the call that wrote it"
    #: Formats pntk recognises but cannot vouch for (no checksums).
    OLD_FORMATS: ClassVar[tuple[str, ...]] = ()

    spec: Any  # the subclass's SPEC

    def __init__(self, path: str | os.PathLike, *, writable: bool = False):
        self.path = Path(path)
        if not (self.path / "zarr.json").is_file():
            raise FileNotFoundError(f"{self.path} is not a {self.WHAT} (no zarr.json there)")
        array = zarr.open_array(str(self.path), mode="r+" if writable else "r")
        attrs = array.attrs.asdict()
        fmt = self.SPEC.FORMAT
        if attrs.get("format") in self.OLD_FORMATS:
            raise StoreError(
                f"{self.path} was written by an earlier pntk without tile checksums, so pntk cannot vouch for its "
                "tiles; compute it again with overwrite=True (CLI: --overwrite)"
            )
        if attrs.get("format") != fmt:
            raise ValueError(
                f"{self.path} is a Zarr array but not a pntk {self.WHAT} (its 'format' attribute is "
                f"{attrs.get('format')!r}, not {fmt!r})"
            )
        # A tile equal to the fill value must still be written as a chunk file, to be fsynced.
        # zarr types its config as a TypedDict of NotRequired keys, which Python 3.10 type checking misreads.
        self.array = array.with_config({"write_empty_chunks": True}) if writable else array  # type: ignore[call-overload]
        self.spec = self.SPEC.from_attrs(attrs)
        self._ledger_cache: tuple[tuple[str, ...] | None, dict[tuple[int, int], dict[str, Any] | None]] | None = None

    @classmethod
    def create(
        cls: type[_Store], path: str | os.PathLike, spec: StoreSpec, *, provenance: Mapping[str, Any] | None = None
    ) -> _Store:
        """A new, empty store for ``spec`` at ``path``, replacing any store there (but not its lock).

        Everything in ``path`` is deleted: check first with :func:`read_spec` that it holds a store of this
        type or nothing, and hold its :class:`StoreLock`.

        Args:
            path: the store's directory.
            spec: what it will hold.
            provenance: where the inputs and the model came from, kept as the ``provenance`` attribute (see
                :func:`pntk.compute`); a JSON-serialisable mapping.

        Raises:
            TypeError: ``provenance`` is not JSON-serialisable.
        """
        assert spec.tile is not None, "a store is created for a spec whose tile is chosen"
        attributes = spec.to_attrs()
        if provenance is not None:
            attributes["provenance"] = json_record(provenance, "provenance")
        path = Path(path)
        for entry in path.iterdir() if path.is_dir() else ():
            if entry.name != _META:
                shutil.rmtree(entry) if entry.is_dir() else entry.unlink()
        shutil.rmtree(path / _META / "ledger", ignore_errors=True)
        zarr.create_array(
            str(path),
            shape=spec.shape,
            chunks=spec.chunks,
            dtype=spec.dtype,
            fill_value=float("nan"),
            # Kernel entries are dense floats that hardly compress: raw chunks keep writes at disk speed. Each
            # chunk ends with its CRC32C (see [checksums]).
            compressors=[Crc32cCodec()],
            dimension_names=spec.dimension_names,
            attributes=attributes,
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
    def provenance(self) -> dict[str, Any] | None:
        """The record of where the inputs and the model came from, as given to :func:`pntk.compute` by its
        first run (``None`` if it was given none); later runs that resumed the store are listed under
        ``"resumed"``. A store made by ``pntk compute`` records the dataset, rows, labels, normalisation,
        model, weights, seeds, versions and command line (``pntk info`` prints them)."""
        record = self.array.attrs.asdict().get("provenance")
        return None if record is None else dict(record)  # type: ignore[arg-type]  # a JSON object

    def record_resume(self, provenance: Mapping[str, Any] | None) -> None:
        """Keep the first run's provenance and note a resuming run: its ``command`` (if any) and the time
        are appended to ``provenance["resumed"]``; a store without provenance takes ``provenance``.

        Raises:
            TypeError: ``provenance`` is not JSON-serialisable.
        """
        if provenance is None:
            return
        current = self.provenance
        if current is None:
            current = json_record(provenance, "provenance")
        else:
            run = {"time": datetime.now(timezone.utc).isoformat(timespec="seconds")}
            if "command" in provenance:
                run["command"] = provenance["command"]
            current.setdefault("resumed", []).append(json_record(run, "provenance"))
        self.array.attrs["provenance"] = current
        _fsync_tree(self.path / "zarr.json", self.path)

    @property
    def kind(self) -> Kind:
        return self.spec.kind

    @property
    def shape(self) -> tuple[int, ...]:
        """The array's shape (:attr:`StoreSpec.shape`)."""
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
        """Read ``K[key]`` after checking the chunks it touches (``[checksums]``); tiles not computed yet read
        as NaN.

        Raises:
            StoreCorruptError: a finished tile under ``key`` is missing, truncated or damaged.
        """
        chunks = self._chunks_under(key)
        self._raise_if_damaged([d for c in chunks if (d := self._chunk_presence(c)) is not None])
        try:
            return cast(np.ndarray, self.array[key])
        except ValueError as err:
            if "checksum" not in str(err):
                raise
            self._raise_if_damaged([d for c in chunks for d in self._check_chunk(c)])
            raise  # the chunk that failed is fine when read again: a transient read error, not damage

    def numpy(self) -> np.ndarray:
        """The whole array in memory, checked as :meth:`__getitem__` checks."""
        return self[...]

    def __array__(self, dtype=None, copy=None) -> np.ndarray:
        values = self.numpy()
        return values if dtype is None else values.astype(dtype, copy=False)

    def finished_tiles(self) -> set[tuple[int, int]]:
        """The ``(i, j)`` of every tile recorded in the ledger (durably written) whose entry is readable.

        When the ledger directory is gone (or an entry unreadable), the tiles whose chunks are all present
        and pass their own checksums count as finished (read once, then remembered by this handle);
        :meth:`repair` writes them back to the ledger.
        """
        return {ij for ij, entry in self._ledger().items() if entry is not None}

    @property
    def missing_tiles(self) -> list[Tile]:
        """Tiles of the plan not finished yet, in row-major order, including finished tiles whose chunk files
        are gone, have the wrong size or end with another checksum (a cheap check; :meth:`verify` reads them)."""
        ledger = self._ledger()
        return [
            t
            for t in self.spec.plan()
            if ledger.get((t.i, t.j)) is None or any(self._chunk_presence((ci, cj)) for ci, cj in self._chunks_of(t))
        ]

    @property
    def complete(self) -> bool:
        """Whether every tile is finished and its chunk files pass the cheap check of :attr:`missing_tiles`."""
        return not self.missing_tiles

    @property
    def nbytes(self) -> int:
        """The size of the array in memory."""
        return self.array.nbytes

    def size_on_disk(self) -> int:
        """Bytes of all files of the store."""
        return sum(f.stat().st_size for f in self.path.rglob("*") if f.is_file())

    def verify(self) -> VerifyReport:
        """Read every finished tile's chunks and check them against their checksums (``[checksums]``).

        Cost: one read of the store (CRC32C runs at several GB/s; the disk usually sets the pace).

        Returns:
            A :class:`VerifyReport`: ``ok``, and each damaged, truncated or missing chunk by tile index.
        """
        ledger = self._ledger()
        damage, checked = [], 0
        for t in self.spec.plan():
            entry = ledger.get((t.i, t.j), _ABSENT)
            if entry is _ABSENT:
                continue
            checked += 1
            if entry is None:
                damage.append(TileDamage(t.i, t.j, "", "ledger entry unreadable, and its chunks fail their checksums"))
                continue
            for chunk in self._chunks_of(t):
                damage.extend(self._check_chunk(chunk))
        return VerifyReport(checked, damage, missing=len(self.spec.plan()) - checked)

    # --- checks ------------------------------------------------------------------------------------------

    def _chunk_key(self, chunk: tuple[int, int]) -> str:
        return self.array.metadata.encode_chunk_key(chunk + (0,) * (self.ndim - 2))

    def _chunks_of(self, tile: Tile) -> list[tuple[int, int]]:
        """The chunks a tile writes (by their indices along the first two axes)."""
        return [(tile.i, tile.j)]

    def _tile_of(self, chunk: tuple[int, int]) -> tuple[int, int]:
        """The tile that writes a chunk."""
        return chunk

    def _chunks_under(self, key) -> list[tuple[int, int]]:
        """The chunks that ``self.array[key]`` reads (all of them for an index this cannot analyse)."""
        key = key if isinstance(key, tuple) else (key,)
        if any(k is Ellipsis for k in key):
            at = next(n for n, k in enumerate(key) if k is Ellipsis)
            key = key[:at] + (slice(None),) * (self.ndim - len(key) + 1) + key[at + 1 :]
        key = key + (slice(None),) * (2 - len(key))
        edges = self.array.chunks[:2]
        try:
            rows, cols = (
                np.unique(np.atleast_1d(np.arange(n)[k]) // e) for n, k, e in zip(self.shape[:2], key[:2], edges)
            )
        except (IndexError, TypeError, ValueError):  # let Zarr report a bad index; check every chunk
            rows, cols = (np.arange(-(-n // e)) for n, e in zip(self.shape[:2], edges))
        return [(int(r), int(c)) for r in rows for c in cols]

    def _chunk_presence(self, chunk: tuple[int, int]) -> TileDamage | None:
        """A cheap check of a finished tile's chunk: present, of the recorded size, ending with the recorded
        checksum (a read of 4 bytes)."""
        tile = self._tile_of(chunk)
        entry = self._ledger().get(tile)
        if entry is None:
            return None  # not finished: reads as NaN, as documented
        key = self._chunk_key(chunk)
        try:
            size = os.stat(self.path / key).st_size
        except FileNotFoundError:
            return TileDamage(*tile, key, "missing")
        recorded = entry["chunks"].get(key)
        if recorded is None:
            return TileDamage(*tile, key, "damaged (no checksum recorded for this chunk)")
        if size != recorded["bytes"]:
            return TileDamage(*tile, key, "truncated" if size < recorded["bytes"] else "damaged (wrong size)")
        if _stored_checksum(self.path / key) != recorded["crc32c"]:
            return TileDamage(*tile, key, "damaged (not the chunk written for this tile)")
        return None

    def _check_chunk(self, chunk: tuple[int, int]) -> list[TileDamage]:
        """Read one chunk of a finished tile and check it against its own and the ledger's checksum."""
        presence = self._chunk_presence(chunk)
        if presence is not None:
            return [presence]
        tile = self._tile_of(chunk)
        entry = self._ledger().get(tile)
        if entry is None:
            return []
        key = self._chunk_key(chunk)
        crc = _chunk_checksum(self.path / key)
        if crc is None or crc != entry["chunks"][key]["crc32c"]:
            return [TileDamage(*tile, key, "damaged (checksum mismatch)")]
        return []

    def _raise_if_damaged(self, damage: list[TileDamage]) -> None:
        if damage:
            raise StoreCorruptError(
                f"{self.path} has damaged tiles, and pntk does not serve damaged data: "
                + "; ".join(map(str, damage[:5]))
                + (f"; and {len(damage) - 5} more" if len(damage) > 5 else "")
                + f". Rerun {self.RERUN} to recompute them, and `pntk verify {self.path}` to check the whole store"
            )

    def _ledger(self) -> dict[tuple[int, int], dict[str, Any] | None]:
        """Every ledger entry by tile, ``None`` for an unreadable one; cached while the entries' names stay.

        Without a ledger directory, the tiles whose chunks pass their own checksums (see
        :meth:`finished_tiles`); likewise for an entry that cannot be read. Such entries have ``"rebuilt":
        True`` until :meth:`repair` writes them.
        """
        ledger = self.path / _META / "ledger"
        try:
            # Entries are only ever added or removed by name (renamed into place), so the set of names
            # identifies the ledger; the mtime alone may not change within one clock tick.
            names = tuple(sorted(n for n in os.listdir(ledger) if _LEDGER_ENTRY.fullmatch(n)))
            stamp: tuple[str, ...] | None = names
        except FileNotFoundError:
            stamp = None
        if self._ledger_cache is not None and self._ledger_cache[0] == stamp:
            return self._ledger_cache[1]
        entries: dict[tuple[int, int], dict[str, Any] | None]
        if stamp is None:
            entries = dict(self._entries_from_chunks(self.spec.plan()))
        else:
            entries = {}
            for m in map(_LEDGER_ENTRY.fullmatch, stamp):
                if m:
                    entries[(int(m[1]), int(m[2]))] = _read_entry(ledger / m[0])
            garbled = [t for t in self.spec.plan() if (t.i, t.j) in entries and entries[(t.i, t.j)] is None]
            entries.update(self._entries_from_chunks(garbled))
        self._ledger_cache = (stamp, entries)
        return entries

    def _entries_from_chunks(self, tiles: list[Tile]) -> dict[tuple[int, int], dict[str, Any]]:
        """Ledger entries for the ``tiles`` whose chunks are all present and pass their own checksums."""
        entries = {}
        for t in tiles:
            chunks = {}
            for chunk in self._chunks_of(t):
                key = self._chunk_key(chunk)
                crc = _chunk_checksum(self.path / key)
                if crc is None:
                    break
                chunks[key] = {"bytes": os.stat(self.path / key).st_size, "crc32c": crc}
            else:
                entries[(t.i, t.j)] = {"rank": None, "seconds": None, "chunks": chunks, "rebuilt": True}
        return entries

    # --- writing -----------------------------------------------------------------------------------------

    def write_tile(self, tile: Tile, values: Tensor, *, rank: int = 0, seconds: float = 0.0) -> None:
        """Write one tile (and, in a symmetric kernel, its mirror image) durably, then record it in the ledger
        with its chunks' sizes and checksums.

        Args:
            tile: a tile of the spec's plan.
            values: the array's ``[rows, cols, …]`` block, on any device (kernels: ``[B1, B2, O, O]`` or
                ``[B1, B2]``).
            rank, seconds: who computed it and how long it took, kept in the ledger entry.

        Raises:
            StoreError: the disk is full (the message gives the bytes still needed) or the store read-only;
                the store stays resumable.
        """
        try:
            self._write_values(tile, values.cpu())
            chunks = {}
            for chunk in self._chunks_of(tile):
                path = self.path / self._chunk_key(chunk)
                _fsync_tree(path, self.path)
                chunks[self._chunk_key(chunk)] = {"bytes": path.stat().st_size, "crc32c": _stored_checksum(path)}
            self._record(tile, {"rank": rank, "seconds": round(seconds, 6), "chunks": chunks})  # [durability]
        except OSError as err:
            raise self._write_error(err, tile) from err

    def _write_values(self, tile: Tile, values: Tensor) -> None:
        self.array[tile.rows, tile.cols] = values.numpy()

    def _write_error(self, err: OSError, tile: Tile) -> OSError:
        """A clear :class:`StoreError` for a full disk or a read-only store; other errors as they are."""
        if err.errno in _FULL_DISK:
            needed = sum(len(self._chunks_of(t)) for t in self.missing_tiles) * self._chunk_file_bytes()
            message = (
                f"the disk holding {self.path} is full (writing tile ({tile.i}, {tile.j})); about "
                f"{format_bytes(needed)} more are needed to finish it. Free space (or choose another out "
                "path), then rerun the same call: finished tiles are kept"
            )
        elif err.errno in _READ_ONLY:
            message = (
                f"cannot write to {self.path} ({os.strerror(err.errno)}); make the store writable (e.g. chmod -R "
                "u+w) or copy it to a writable place and pass that as out, then rerun the same call"
            )
        else:
            return err
        error = StoreError(message)
        error.errno = err.errno
        return error

    def _chunk_file_bytes(self) -> int:
        """The size of one chunk file: a full chunk of numbers and its checksum."""
        return self.dtype.itemsize * math.prod(self.array.chunks) + _CHECKSUM_BYTES

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

    def repair(self) -> VerifyReport:
        """Verify every finished tile, forget the damaged ones and rebuild lost ledger entries.

        A damaged tile's ledger entry and chunks are deleted, so that the next run computes it again. A tile
        without a readable entry (ledger directory deleted, entry garbled) gets one back when its chunks are
        all present and pass their own checksums; other chunks without an entry may be torn writes and are
        left to be computed again ([durability]). Only safe under the store's :class:`StoreLock`.

        Returns:
            The report of :meth:`verify` before the repair, with ``rebuilt`` set.
        """
        ledger = self.path / _META / "ledger"
        report = self.verify()  # the ledger as read, lost entries rebuilt in memory from chunks that verify
        rebuilt = {ij: e for ij, e in self._ledger().items() if e is not None and e.get("rebuilt")}
        ledger.mkdir(parents=True, exist_ok=True)
        plan = {(t.i, t.j): t for t in self.spec.plan()}
        for ij in report.damaged_tiles:
            (ledger / f"{ij[0]}-{ij[1]}").unlink(missing_ok=True)
            for chunk in self._chunks_of(plan[ij]):
                (self.path / self._chunk_key(chunk)).unlink(missing_ok=True)
        for ij, entry in rebuilt.items():
            self._record(plan[ij], {**entry, "rebuilt": False, "rebuilt_from_chunks": True})
        _fsync(ledger)
        self._ledger_cache = None
        if self.missing_tiles and self.array.attrs.get("complete"):
            self.array.attrs["complete"] = False
            _fsync_tree(self.path / "zarr.json", self.path)
        return dataclasses.replace(report, rebuilt=len(rebuilt))

    def mark_complete(self) -> None:
        """Set the ``complete`` attribute (for readers that do not read the ledger).

        Raises:
            RuntimeError: tiles are missing.
        """
        missing = self.missing_tiles
        if missing:
            raise RuntimeError(f"{self.path} still misses {len(missing)} tiles; it is not complete")
        if self.array.attrs.get("complete") is not True:
            self.array.attrs["complete"] = True
            _fsync_tree(self.path / "zarr.json", self.path)


class KernelStore(ChunkedStore):
    """A kernel in a Zarr store: reads like an array, knows which tiles are finished.

    Obtained from :func:`open` (read-only) or :func:`pntk.compute`. Indexing reads from disk and returns
    NumPy arrays; ``np.asarray(store)`` reads everything. Every read checks the chunks it touches and raises
    :class:`~pntk.errors.StoreCorruptError` rather than return damaged numbers (the ``[checksums]`` note).

    Example:
        >>> import tempfile, torch, pntk
        >>> net = torch.nn.Sequential(torch.nn.Linear(3, 8), torch.nn.Tanh(), torch.nn.Linear(8, 2)).eval()
        >>> out = tempfile.mkdtemp() + "/k.zarr"
        >>> K = pntk.compute(net, torch.randn(10, 3), kind="pntk", out=out, batch_size=4)
        >>> K.shape, K.complete, len(K.missing_tiles), K[:2, :3].shape, K.verify().ok
        ((10, 10), True, 0, (2, 3), True)
    """

    SPEC = KernelSpec
    WHAT = "kernel store"
    RERUN = "the same `pntk compute` (or pntk.compute) call"
    OLD_FORMATS = _OLD_FORMATS

    spec: KernelSpec

    def _chunks_of(self, tile: Tile) -> list[tuple[int, int]]:
        """The chunks a tile writes: its own and, when symmetric and off the diagonal, its mirror image."""
        if self.spec.symmetric and not tile.on_diagonal:
            return [(tile.i, tile.j), (tile.j, tile.i)]
        return [(tile.i, tile.j)]

    def _tile_of(self, chunk: tuple[int, int]) -> tuple[int, int]:
        ci, cj = chunk
        return (cj, ci) if self.spec.symmetric and ci > cj else (ci, cj)

    def _write_values(self, tile: Tile, values: Tensor) -> None:
        super()._write_values(tile, values)
        if self.spec.symmetric and not tile.on_diagonal:
            # torch transposes faster than NumPy
            self.array[tile.cols, tile.rows] = transpose_tile(values).contiguous().numpy()

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


_ABSENT: Any = object()


def open(path: str | os.PathLike) -> Any:  # noqa: A001 - pntk.open mirrors zarr.open
    """Open a kernel store, or a feature store, read-only (a read-only directory or file system is fine).

    Args:
        path: the store's directory, e.g. ``"k.zarr"``.

    Returns:
        A :class:`KernelStore`: ``K[i0:i1, j0:j1]``, ``K.shape``, ``K.numpy()``, ``K.complete``,
        ``K.missing_tiles``, ``K.verify()``, ``K.attrs``; for a store of features written by
        :func:`pntk.compute_features`, a :class:`pntk.features.FeatureStore`.

    Raises:
        FileNotFoundError: no store at ``path``.
        ValueError: a Zarr array not written by pntk.
        StoreError: a store written without checksums by an earlier pntk.
    """
    return store_type(path)(path)


def store_type(path: str | os.PathLike) -> type[ChunkedStore]:
    """The class of the pntk store at ``path``, by its ``format`` attribute: a :class:`KernelStore` unless it
    is a feature store (the kernel store's class reports anything else)."""
    try:
        fmt = json.loads((Path(path) / "zarr.json").read_bytes()).get("attributes", {}).get("format")
    except (OSError, ValueError, AttributeError):
        fmt = None
    if isinstance(fmt, str) and fmt.startswith("pntk-feature-store/"):
        from .features.store import FeatureStore  # features need the kernels package, which needs this module

        return FeatureStore
    return KernelStore


def read_spec(path: str | os.PathLike, store_class: type[ChunkedStore] = KernelStore) -> Any:
    """The spec of the store at ``path``; ``None`` if there is no store (an empty or missing directory).

    Args:
        path: the store's directory.
        store_class: the type of store expected there (default: a kernel store).

    Raises:
        FileExistsError: ``path`` is a file, a non-empty directory that is no Zarr store, or a Zarr store
            not written by pntk as a store of that type; none of them is replaced.
    """
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise FileExistsError(f"{path} is a file, not a {store_class.WHAT}; choose another out path")
    if not path.exists() or not {p.name for p in path.iterdir()} - {_META}:
        return None
    try:
        return store_class(path).spec
    except StoreError:
        raise
    except (FileNotFoundError, ValueError, KeyError) as err:
        raise FileExistsError(
            f"{path} exists and is not a pntk {store_class.WHAT} ({err}); choose another out path"
        ) from None


class StoreLock:
    """An exclusive lock on a store's ``.pntk/lock`` file, which the OS drops when its holder dies.

    ``fcntl.flock`` where it exists (Linux, macOS), ``msvcrt.locking`` on Windows.

    Raises:
        StoreLockedError: another process holds it.
        StoreError: the store is read-only.
    """

    def __init__(self, path: str | os.PathLike):
        meta = Path(path) / _META
        try:
            meta.mkdir(parents=True, exist_ok=True)
            self._fd = os.open(meta / "lock", os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as err:
            if err.errno not in _READ_ONLY:
                raise
            error = StoreError(
                f"{path} is read-only ({os.strerror(err.errno)}), so pntk cannot lock it to write tiles. Reading "
                "it needs no lock (pntk.open). To finish it, make it writable (e.g. chmod -R u+w) or copy it to a "
                "writable place and pass that as out"
            )
            error.errno = err.errno
            raise error from None
        if not _try_lock(self._fd):
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
        """Drop the lock (closing the file releases it)."""
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


def _try_lock(fd: int) -> bool:
    """Take an exclusive, non-blocking lock on ``fd``; ``False`` when another process holds it."""
    try:
        import fcntl  # not on Windows
    except ImportError:
        import msvcrt  # type: ignore[import-not-found,unused-ignore]

        try:
            msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)  # type: ignore[attr-defined,unused-ignore]
        except OSError:
            return False
        return True
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


def _read_entry(path: Path) -> dict[str, Any] | None:
    """A ledger entry, or ``None`` when it is not one (garbled, truncated, of another format)."""
    try:
        entry = json.loads(path.read_bytes())
    except (OSError, ValueError):
        return None
    if not (isinstance(entry, dict) and isinstance(entry.get("chunks"), dict) and entry["chunks"]):
        return None
    return (
        entry if all(isinstance(c, dict) and {"bytes", "crc32c"} <= set(c) for c in entry["chunks"].values()) else None
    )


def _stored_checksum(path: Path) -> int:
    """The checksum a chunk file ends with (written by Zarr's crc32c codec)."""
    with path.open("rb") as f:
        f.seek(-_CHECKSUM_BYTES, os.SEEK_END)
        return int.from_bytes(f.read(_CHECKSUM_BYTES), "little")


def _chunk_checksum(path: Path) -> int | None:
    """The checksum of a chunk file when its bytes give the checksum it ends with; ``None`` when they do not
    or the file is missing or too short. Reads :data:`_READ_BLOCK` bytes at a time, so memory stays small."""
    try:
        with path.open("rb") as f:
            left = os.fstat(f.fileno()).st_size - _CHECKSUM_BYTES
            if left <= 0:
                return None
            crc = 0
            while left > 0:
                block = f.read(min(left, _READ_BLOCK))
                if not block:
                    return None
                crc = google_crc32c.extend(crc, block)
                left -= len(block)
            stored = int.from_bytes(f.read(_CHECKSUM_BYTES), "little")
    except FileNotFoundError:
        return None
    return stored if crc == stored else None


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


def json_record(record: Mapping[str, Any], what: str) -> dict[str, Any]:
    """``record`` as plain JSON data (a deep copy), checked before anything is written.

    Raises:
        TypeError: a value JSON cannot hold (a tensor, an array, a path object, ...).
    """
    try:
        return json.loads(json.dumps(dict(record), allow_nan=False))
    except (TypeError, ValueError) as err:
        raise TypeError(
            f"{what} must hold only JSON values (dicts, lists, str, int, float, bool, None): {err}; convert "
            "tensors and arrays with .tolist() and paths with str()"
        ) from None


def _version(package: str) -> str:
    if package == "torch":
        return torch.__version__
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return "unknown"
