"""Features out of core: the rows of ``Φ`` in a resumable Zarr store, written as kernel stores are.

Layout of a store ``phi.zarr/`` (that of a kernel store, :mod:`pntk.store`, with blocks of rows for tiles)::

    zarr.json            array metadata; attributes hold the spec (kind, N, k, O, dtype, method, distribution,
                         seed, block, rows per chunk, fingerprints, versions), "complete" and "provenance"
    c/i/0[/0]            one chunk per block of rows ``[tile, k]`` (``[tile, O, k]`` for the eNTK), ending with
                         its CRC32C
    .pntk/lock           the writer's lock
    .pntk/ledger/i-0     one small file per finished block: its chunk's size and checksum

The ledger, checksums, lock, resume and torchrun sharing are those of kernel stores (:class:`pntk.store.
ChunkedStore`, :func:`pntk.compute.setup_store`): a block is recorded only once durably written, a killed run
resumes bit-identically, damaged chunks are refused on reading and computed again on resuming, and ``pntk
verify`` checks the store. Any Zarr reader opens it (``zarr.open_array("phi.zarr")``).
"""

from __future__ import annotations

import dataclasses
import os
import sys
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import IO, Any, ClassVar

import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from ..choices import parse_enum
from ..compute import (
    fill_and_finish,
    model_fingerprint,
    model_tensor_digests,
    numpy_dtype,
    open_or_create,
    setup_store,
    tile_log,
    write_behind,
)
from ..distributed import Group, check_ranks_agree, process_group, share
from ..errors import StoreError
from ..kernels.api import model_and_inputs
from ..kernels.kinds import Kind
from ..kernels.outputs import OutputLike, output_key
from ..kernels.selection import ParamsLike, params_key
from ..probe import behaviour
from ..sources import RowSource, fingerprint
from ..store import ChunkedStore, StoreSpec, json_record
from ..tiling import Tile, edges
from .projection import Distribution
from .sketch import DEFAULT_BLOCK, FeatureMap, Method


@dataclass(frozen=True)
class FeatureSpec(StoreSpec):
    """What a feature store holds: enough to refuse to mix rows of two different feature maps.

    Attributes:
        kind: the kernel the features sketch.
        N: the number of samples (rows).
        k: the number of features.
        O: the number of outputs of the network.
        dtype: the NumPy name of the numbers, e.g. ``"float32"``.
        method, distribution, seed, block: the feature map's (:class:`pntk.features.FeatureMap`).
        tile: rows per chunk (and per pass); ``None`` in a request means "whatever the store holds".
        model: ``sha256:…`` of the model's tensors and module tree.
        data: ``sha256:…`` of the inputs.
        behaviour: the model's outputs and a directional derivative on a probe batch
            (:func:`pntk.probe.behaviour`); ``None`` in a request means "not checked".
        params, output: the parameter and output selections, as a kernel store records them
            (:class:`pntk.store.KernelSpec`); ``None`` in a store made before they were recorded.
    """

    kind: Kind
    N: int
    k: int
    O: int  # noqa: E741 - the maths' name
    dtype: str
    method: str
    distribution: str
    seed: int
    block: tuple[int, int]
    tile: int | None
    model: str
    data: str
    behaviour: dict[str, Any] | None = None
    params: str | None = None
    output: str | None = None

    FORMAT: ClassVar[str] = "pntk-feature-store/1"
    FINGERPRINTS: ClassVar[tuple[str, ...]] = ("model", "data")
    PROBED: ClassVar[str] = "data"
    SELECTIONS: ClassVar[tuple[str, ...]] = ("params", "output")

    @property
    def shape(self) -> tuple[int, ...]:
        """``(N, O, k)`` for the eNTK, ``(N, k)`` otherwise."""
        return (self.N, self.O, self.k) if self.kind is Kind.ENTK else (self.N, self.k)

    @property
    def chunks(self) -> tuple[int, ...]:
        """A block of rows: ``(tile, O, k)`` or ``(tile, k)``."""
        assert self.tile is not None, "a request's spec has no chunks until the tile is chosen"
        return (self.tile, *self.shape[1:])

    @property
    def dimension_names(self) -> tuple[str, ...]:
        return ("n", "a", "feature") if self.kind is Kind.ENTK else ("n", "feature")

    def plan(self) -> list[Tile]:
        """Every block of rows, in order, as tiles ``(i, 0)`` that span the other axes."""
        assert self.tile is not None, "a request's spec has no tile plan until the tile is chosen"
        return [Tile(i, 0, r0, r1, 0, self.shape[1]) for i, (r0, r1) in enumerate(edges(self.N, self.tile))]

    @classmethod
    def from_attrs(cls, attrs: dict[str, Any]) -> FeatureSpec:
        spec = super().from_attrs(attrs)
        c_out, c_in = spec.block
        return dataclasses.replace(spec, block=(c_out, c_in))


class FeatureStore(ChunkedStore):
    """Features ``Φ`` ``[N, k]`` (``[N, O, k]`` for the eNTK) in a Zarr store, read block by block.

    Obtained from :func:`compute_features` or :func:`pntk.open`. Indexing reads rows from disk as NumPy arrays,
    checked against their checksums (:class:`~pntk.errors.StoreCorruptError` rather than damaged numbers);
    :meth:`blocks` streams them. :class:`pntk.features.FeatureKernel` and :class:`pntk.features.FeatureRidge`
    take a store and stream its rows, so ``Φ`` is never held whole.

    Example:
        >>> import tempfile, torch, pntk
        >>> net = torch.nn.Sequential(torch.nn.Linear(3, 8), torch.nn.Tanh(), torch.nn.Linear(8, 2)).eval()
        >>> x = torch.randn(10, 3)
        >>> Phi = pntk.compute_features(net, x, k=64, out=tempfile.mkdtemp() + "/phi.zarr", batch_size=4)
        >>> Phi.shape, Phi.complete, Phi.verify().ok, [rows for rows, _ in Phi.blocks()]
        ((10, 64), True, True, [slice(0, 4, None), slice(4, 8, None), slice(8, 10, None)])
        >>> bool((torch.from_numpy(Phi.numpy()) == pntk.features(net, x, k=64, batch_size=4)).all())
        True
    """

    SPEC = FeatureSpec
    WHAT = "feature store"
    RERUN = "the same `pntk features --out` (or pntk.compute_features) call"

    spec: FeatureSpec

    @property
    def k(self) -> int:
        """The number of features."""
        return self.spec.k

    @property
    def _rows_per_chunk(self) -> int:
        return self.array.chunks[0]

    def blocks(self, batch_size: int | None = None) -> Iterator[tuple[slice, Tensor]]:
        """The rows of ``Φ``, a block at a time: ``(rows, Φ[rows])`` with ``Φ[rows]`` a CPU tensor ``[B, k]``
        (``[B, O, k]``), ``B`` = ``batch_size`` (default: the rows of one chunk).

        Raises:
            StoreError: blocks are missing (never computed, or lost); rerun the call that wrote the store.
            StoreCorruptError: a block is damaged.
        """
        missing = self.missing_tiles
        if missing:
            raise StoreError(
                f"{self.path} misses {len(missing)} of {len(self.spec.plan())} blocks of rows, which read as NaN; "
                f"finish it first by rerunning {self.RERUN}"
            )
        step = batch_size or self._rows_per_chunk
        for start in range(0, self.spec.N, step):
            rows = slice(start, min(start + step, self.spec.N))
            yield rows, torch.from_numpy(self[rows])

    def __repr__(self) -> str:
        state = "complete" if self.complete else f"{len(self.missing_tiles)} blocks missing"
        return f"FeatureStore({str(self.path)!r}, kind={self.kind.value!r}, shape={self.shape}, {state})"


def compute_features(
    model: nn.Module,
    x: Any,
    *,
    k: int,
    out: str | os.PathLike,
    kind: Kind | str = Kind.PNTK,
    method: Method | str = Method.KRONECKER,
    seed: int = 0,
    distribution: Distribution | str = Distribution.GAUSSIAN,
    block: tuple[int, int] = DEFAULT_BLOCK,
    params: ParamsLike = None,
    dtype: torch.dtype | None = None,
    batch_size: int | None = None,
    memory: int | str | None = None,
    output: OutputLike = None,
    resume: bool = True,
    overwrite: bool = False,
    progress: bool | None = None,
    log_json: str | os.PathLike | IO[str] | None = None,
    check_samples: bool = True,
    provenance: Mapping[str, Any] | None = None,
) -> FeatureStore:
    """The features ``Φ`` of :func:`pntk.features` written block by block into a Zarr store; rerun the same
    call to resume it.

    Each block of ``batch_size`` rows is sketched in one pass, written to its own chunk with a checksum and
    recorded as finished only once on disk, exactly as :func:`pntk.compute` writes kernel tiles: a rerun after
    a crash or ``kill -9`` computes only the missing blocks (and the damaged ones, with a warning) and ends
    bit-identical to an uninterrupted run; a store made by another model, inputs or feature map is refused.
    Under ``torchrun`` the ranks check that they agree, share the blocks, and rank 0 marks the store complete.
    The rows equal those of :func:`pntk.features` with the same ``batch_size``, bit for bit; with another one,
    to the rounding of the network's passes.

    Args:
        model: an ``nn.Module`` mapping ``[B, *input]`` to ``[B, O]`` (eval mode if it has BatchNorm/Dropout).
        x: ``[N, *input]`` inputs as :func:`pntk.compute` takes them (tensors, arrays, a memory-mapped
            ``.npy``, a Dataset); only a block's rows are read at a time.
        k, kind, method, seed, distribution, block, params, dtype, output: the feature map, as for
            :func:`pntk.features` (``method`` ``"kronecker"`` or ``"dense"``). The store records the
            ``params`` and ``output`` selections, and refuses to resume with others.
        out: the store's directory, e.g. ``"phi.zarr"``.
        batch_size: rows per block (and per pass); default the most whose work fits ``memory``
            (:func:`pntk.planning.pass_chunk`). When resuming, the store's is kept.
        memory: the budget for one block's work, e.g. ``"1GB"``.
        resume, overwrite, progress, log_json, check_samples, provenance: as for :func:`pntk.compute`
            (``log_json`` lines hold ``i``, ``rows``, ``seconds``, ``write_seconds``, ``rank``, ``time``).

    Returns:
        The store, opened read-only: a :class:`FeatureStore` of shape ``[N, k]`` (``[N, O, k]`` for the eNTK).

    Raises:
        ValueError: ``method="nystrom"`` (its features need the landmarks' kernel: use :class:`pntk.Nystrom`),
            anything :func:`pntk.features` refuses.
        StoreMismatchError, StoreLockedError, StoreError, RankMismatchError, FileExistsError, TypeError: as
            :func:`pntk.compute`.

    Example:
        >>> import tempfile, torch, pntk
        >>> net = torch.nn.Sequential(torch.nn.Linear(3, 8), torch.nn.Tanh(), torch.nn.Linear(8, 2)).eval()
        >>> Phi = pntk.compute_features(net, torch.randn(10, 3), k=64, kind="entk", out=tempfile.mkdtemp() + "/p")
        >>> Phi.shape, Phi.complete
        ((10, 2, 64), True)
    """
    kind = parse_enum(Kind, kind, "kind")
    if parse_enum(Method, method, "method") is Method.NYSTROM:
        raise ValueError(
            "compute_features writes random projections (method 'kronecker' or 'dense'); Nyström features need "
            "the landmarks' kernel first: build pntk.Nystrom(model, landmarks) and call it on blocks of rows"
        )
    record = None if provenance is None else json_record(provenance, "provenance")
    fm, source, _ = model_and_inputs(
        model, x, params=params, dtype=dtype, names=("x", "x"), check_samples=check_samples, output=output
    )
    fmap = FeatureMap(
        model,
        k=k,
        kind=kind,
        method=method,
        seed=seed,
        distribution=distribution,
        block=block,
        params=params,
        dtype=None if dtype is None else fm.dtype,
        output=output,
    )
    probe = fm.prepare_inputs(source.fetch(slice(0, 2)).map(lambda t: t.to(fm.device)), "x")
    requested = FeatureSpec(
        kind=kind,
        N=len(source),
        k=k,
        O=fm.num_outputs,
        dtype=numpy_dtype(fm.dtype),
        method=fmap.method.value,
        distribution=fmap.distribution.value,
        seed=seed,
        block=fmap.block,
        tile=batch_size,
        model=model_fingerprint(fm),
        data=fingerprint(source),
        behaviour=behaviour(fm, probe),
        params=params_key(fm.module, fm.params),
        output=output_key(output),
    )

    def planned() -> FeatureSpec:
        return dataclasses.replace(
            requested, tile=fmap.batch_size(probe, n=len(source), memory=memory, batch_size=batch_size)
        )

    with process_group() as group:
        if group.world_size > 1:
            agreed = {"memory": memory, "resume": resume, "overwrite": overwrite, "out": os.fspath(out)}
            check_ranks_agree(group, requested, model_tensor_digests(fm), agreed)
        lock, spec, missing = setup_store(
            group,
            out,
            FeatureStore,
            requested,
            lambda: open_or_create(
                out, FeatureStore, requested, planned, resume=resume, overwrite=overwrite, provenance=record
            ),
        )

        def fill(store: FeatureStore) -> None:
            with tile_log(log_json) as log:
                done = len(spec.plan()) - len(missing)
                _fill(store, fmap, fm.device, source, share(missing, group), group, progress, log, done=done)

        fill_and_finish(group, out, FeatureStore, lock, missing, fill)
    return FeatureStore(out)


def _fill(
    store: FeatureStore,
    fmap: FeatureMap,
    device: torch.device,
    source: RowSource,
    blocks: list[Tile],
    group: Group,
    progress: bool | None,
    log,
    *,
    done: int,
) -> None:
    """Sketch this rank's ``blocks``, each written by a background thread while the next is sketched."""
    spec = store.spec
    if progress is None:
        progress = group.is_leader and sys.stderr.isatty()
    rank = f" rank {group.rank}/{group.world_size}" if group.world_size > 1 else ""
    resumed = f" (resuming: {done} done)" if done else ""
    bar = tqdm(total=len(blocks), desc=f"{spec.kind.value} features{rank}{resumed}", unit="block", disable=not progress)
    start, rows_done = time.perf_counter(), 0

    def sketched() -> Iterator[tuple[Tile, Tensor]]:
        for t in blocks:
            x = source.fetch(t.rows).map(lambda a: a.to(device))
            yield t, fmap(x, batch_size=spec.tile, progress=False)

    def write(t: Tile, values: Tensor, seconds: float) -> None:
        nonlocal rows_done
        clock = time.perf_counter()
        store.write_tile(t, values, rank=group.rank, seconds=seconds)
        log(
            {
                "i": t.i,
                "rows": [t.r0, t.r1],
                "seconds": round(seconds, 6),
                "write_seconds": round(time.perf_counter() - clock, 6),
                "rank": group.rank,
                "time": round(time.time(), 3),
            }
        )
        rows_done += t.r1 - t.r0
        bar.set_postfix_str(f"{rows_done / (time.perf_counter() - start):.3g} samples/s", refresh=False)
        bar.update()

    with bar:
        write_behind(sketched(), write)
