"""``pntk.compute``: a kernel of any size, tile by tile, into a resumable Zarr store, on one or many processes."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import sys
import time
import warnings
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import IO, Any

import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from .choices import parse_enum
from .distributed import Group, check_ranks_agree, process_group, share
from .errors import StoreError, StructureChangedError
from .kernels.api import iter_tiles, model_and_inputs
from .kernels.engine import KernelEngine
from .kernels.inputs import Inputs
from .kernels.kinds import Engine, Kind
from .kernels.model import FunctionalModel
from .kernels.outputs import OutputLike, output_key
from .kernels.selection import ParamsLike, params_key
from .planning import DEFAULT_OPTIONS, Executor, Options, Plan, engine_of, make_plan
from .probe import behaviour
from .sources import RowSource, fingerprint
from .store import (
    _READ_ONLY,
    ChunkedStore,
    KernelSpec,
    KernelStore,
    StoreLock,
    StoreMismatchError,
    StoreSpec,
    json_record,
    read_spec,
)
from .store import open as open_store
from .tiling import Tile


def compute(
    model: nn.Module,
    data1: Any,
    data2: Any = None,
    *,
    kind: Kind | str,
    out: str | os.PathLike,
    memory: int | str | None = None,
    batch_size: int | None = None,
    engine: Engine | str = Engine.AUTO,
    dtype: torch.dtype | str | None = None,
    device: torch.device | str | None = None,
    params: ParamsLike = None,
    resume: bool = True,
    overwrite: bool = False,
    progress: bool | None = None,
    log_json: str | os.PathLike | IO[str] | None = None,
    options: Options = DEFAULT_OPTIONS,
    check_samples: bool = True,
    provenance: Mapping[str, Any] | None = None,
    output: OutputLike = None,
) -> KernelStore:
    """Compute a kernel tile by tile into a Zarr store on disk; rerun the same call to resume it.

    The kernel is that of :func:`pntk.kernel` (``[N1, N2, O, O]`` for ``kind="entk"``, ``[N1, N2]`` for
    ``"trace"`` and ``"pntk"``), bit for bit with the same engine and ``batch_size``, but it never
    needs to fit in memory: each tile is computed from the rows and columns it needs, written to its own
    chunk with a checksum and recorded as finished only once on disk (see :mod:`pntk.store`). A rerun after a
    crash or ``kill -9`` computes only the missing tiles and ends bit-identical to an uninterrupted run; it
    first verifies the finished tiles and computes again those whose chunks were damaged, truncated or
    deleted (with a warning naming them), and rebuilds a lost ledger from the chunks that verify. A store
    begun by a model with the same weights but another ``forward`` is refused: its outputs and a directional
    derivative on the first inputs are part of the store's fingerprints (:func:`pntk.probe.behaviour`).

    Under ``torchrun`` (or in an initialised process group) every rank runs the same call: every rank
    fingerprints its model, inputs and options and they are compared before anything is written
    (:func:`pntk.distributed.check_ranks_agree`); rank 0 creates or checks the store, the missing tiles are
    dealt to the ranks (:func:`pntk.distributed.share`), each writes its own, and rank 0 marks the store
    complete at the end.

    Args:
        model: an ``nn.Module`` mapping ``[B, *input]`` to ``[B, O]``, in eval mode if it has BatchNorm or
            Dropout. Fetched inputs are moved to its device.
        data1: the ``N1`` inputs, as :func:`pntk.kernel` takes them (a memory-mapped ``.npy`` is read
            lazily). Only the rows a tile needs are read.
        data2: the ``N2`` inputs likewise; ``None`` means ``data1``: only the tiles on and above the diagonal
            are computed, and the store holds the full square (each off-diagonal tile is mirrored).
        kind: ``"entk"``, ``"trace"`` or ``"pntk"``.
        out: the store's directory, e.g. ``"k.zarr"``; created if missing.
        memory: the budget for the tile work, in bytes or as ``"4G"``, ``"512MB"``, ``"2GiB"``: tiles are
            as few as fit it (:func:`pntk.planning.make_plan`, whose ``[memory budget]`` note says what it
            covers). Default: half the machine's memory, at most 12 GiB.
        batch_size: the tile edge (and Zarr chunk edge) instead of one planned from ``memory``; with both
            given, the tile must fit the budget. When resuming, the store's tile is kept.
        engine: ``"auto"``, ``"jacobian"``, ``"vp"``, ... as in :func:`pntk.kernel`; ``"auto"`` picks as it
            does when the store is new, and keeps the store's engine when resuming.
        dtype: compute and store in this floating dtype; default: the model's.
        device: compute on this device; default: the model's.
        params: parameters to differentiate: a dict by name, name patterns or a predicate, as for
            :func:`pntk.kernel`; default: all trainable ones. The store records the selection, and a rerun
            with another one is refused as a mismatch.
        resume: continue an existing store of the same computation; ``False`` refuses an existing store.
        overwrite: replace the kernel store at ``out`` (a directory that is not one is never deleted).
        progress: show a progress bar (tiles, entries per second, ETA); default: on rank 0 when stderr is a
            terminal.
        log_json: a path (appended to) or a text file: one JSON line per finished tile with ``i``, ``j``,
            ``rows``, ``cols``, ``entries`` (kernel entries filled, the mirror included), ``seconds`` (to
            compute it), ``write_seconds`` (to write it durably, while the next tile is computed), ``rank``
            and ``time`` (Unix time when it was recorded).
        provenance: where the inputs and the model came from, any JSON-serialisable mapping (dataset, rows,
            labels, model spec, seeds, command line, ...): written into the store's attributes when it is
            created and given back by :attr:`KernelStore.provenance` (``pntk info`` prints it). A run that
            resumes the store keeps the first run's record and appends its ``"command"`` entry, if any, to
            ``provenance["resumed"]``. It plays no part in deciding whether a store may be resumed: the
            fingerprints of the model and the data do.
        check_samples: first check that each sample's output depends on that sample only and is
            deterministic, as :func:`pntk.kernel` does; ``False`` risks a silently wrong kernel.
        output: what of the model's output is ``f(x)``, as for :func:`pntk.kernel`; recorded in the store
            like ``params``.

    Returns:
        The store, opened read-only (:class:`pntk.store.KernelStore`).

    Raises:
        StoreMismatchError: the store at ``out`` was made for another model (weights, module tree or
            behaviour), data, kind, shape, dtype, engine or tile; the message lists what differs.
        StoreLockedError: another process (not of this torchrun job) is writing to ``out``.
        StoreError: the disk is full (with the bytes still needed) or the store is read-only and not complete;
            the store stays resumable.
        RankMismatchError: ranks of a torchrun job disagree on the model, inputs or options (which rank,
            which parameter or input).
        FileExistsError: ``out`` exists with ``resume=False``, or is not a kernel store.
        ValueError: as :func:`pntk.kernel` (:class:`pntk.errors.ModelError`,
            :class:`pntk.errors.InputError`); a memory budget too small for a tile; ``batch_size`` above the
            budget.
        TypeError: ``provenance`` holds values JSON cannot hold.
        StructureChangedError: the structured engine (asked for, or chosen by ``"auto"``) met a tile that does
            not follow its plan: the model's structure depends on its inputs; the message says to compute the
            store with ``engine="jacobian"``.

    Example:
        >>> import tempfile, torch, pntk
        >>> net = torch.nn.Sequential(torch.nn.Linear(3, 8), torch.nn.Tanh(), torch.nn.Linear(8, 2)).eval()
        >>> x = torch.randn(10, 3)
        >>> out = tempfile.mkdtemp() + "/k.zarr"
        >>> Th = pntk.compute(net, x, kind="entk", out=out, memory="64MB")
        >>> Th.shape, Th.complete
        ((10, 10, 2, 2), True)
        >>> same = pntk.entk(net, x, batch_size=Th.spec.tile, engine=Th.spec.engine)
        >>> bool((torch.from_numpy(Th.numpy()) == same).all())
        True
    """
    kind = parse_enum(Kind, kind, "kind")
    engine = parse_enum(Engine, engine, "engine")
    record = None if provenance is None else json_record(provenance, "provenance")
    fm, source1, source2 = model_and_inputs(
        model, data1, data2, params=params, dtype=dtype, device=device, names=("data1", "data2"),
        check_samples=check_samples, output=output,
    )  # fmt: skip
    symmetric = data2 is None
    probe = fm.prepare_inputs(source1.fetch(slice(0, 2)).map(lambda t: t.to(fm.device)), "data1")
    # Every rank builds the spec it asks for; ranks compare them before anything is written. ``engine`` and
    # ``tile`` are left open (None) where a resumed store decides.
    requested = KernelSpec(
        kind=kind,
        N1=len(source1),
        N2=len(source2),
        O=fm.num_outputs,
        dtype=numpy_dtype(fm.dtype),  # refuses a dtype NumPy cannot hold before anything is written
        symmetric=symmetric,
        engine=None if engine is Engine.AUTO else engine.value,
        tile=batch_size,
        model=model_fingerprint(fm),
        data1=fingerprint(source1),
        data2=None if symmetric else fingerprint(source2),
        behaviour=behaviour(fm, probe),
        params=params_key(fm.module, fm.params),
        output=output_key(output),
    )

    def new_plan(engine: Engine | str, batch_size: int | None) -> Plan:
        return make_plan(
            fm, kind, len(source1), len(source2), symmetric=symmetric, engine=engine, batch_size=batch_size,
            memory=memory, executor=Executor.STORE, options=options,
        )  # fmt: skip

    with process_group() as group:
        if group.world_size > 1:
            agreed = {"memory": memory, "resume": resume, "overwrite": overwrite, "out": os.fspath(out)}
            check_ranks_agree(group, requested, model_tensor_digests(fm), agreed)

        def planned() -> KernelSpec:
            plan = new_plan(requested.engine or Engine.AUTO, requested.tile)
            return dataclasses.replace(requested, engine=plan.engine, tile=plan.tile)

        lock, spec, missing = setup_store(
            group,
            out,
            KernelStore,
            requested,
            lambda: open_or_create(
                out, KernelStore, requested, planned, resume=resume, overwrite=overwrite, provenance=record
            ),
        )

        def fill(store: KernelStore) -> None:
            assert spec.engine is not None  # a store's spec names its engine, planned or resumed
            eng = engine_of(new_plan(spec.engine, spec.tile))
            with tile_log(log_json) as log:
                done = len(spec.plan()) - len(missing)
                try:
                    _fill(store, eng, fm, source1, source2, share(missing, group), group, progress, log, done=done)
                except StructureChangedError as error:
                    # The store's engine is in its provenance: another engine is another store.
                    raise error.advised(
                        "compute the store with engine='jacobian', which holds for any model (overwrite=True, "
                        "or --engine jacobian --overwrite on the command line, replaces this one)"
                    ) from error

        fill_and_finish(group, out, KernelStore, lock, missing, fill)
    return open_store(out)


def fill_and_finish(
    group: Group,
    out: str | os.PathLike,
    store_class: type[ChunkedStore],
    lock: StoreLock | None,
    missing: list[Tile],
    fill: Callable[[Any], None],
) -> None:
    """Every rank writes its share of the ``missing`` tiles (``fill(store)``); once all have, the leader marks
    the store complete; the lock (the leader's) is released whatever happens."""
    try:
        if missing:
            fill(store_class(out, writable=True))
        group.barrier()
        if group.is_leader and lock is not None:
            store_class(out, writable=True).mark_complete()
        group.barrier()
    finally:
        if lock is not None:
            lock.release()


def setup_store(
    group: Group,
    out: str | os.PathLike,
    store_class: type[ChunkedStore],
    requested: StoreSpec,
    open_or_create: Callable[[], tuple[Any, list[Tile]]],
) -> tuple[StoreLock | None, Any, list[Tile]]:
    """Rank 0 locks the store (of type ``store_class``) and runs ``open_or_create``; every rank gets the spec and
    missing tiles.

    A read-only store that already holds this computation, complete and verified, is used as it is, unlocked.

    Returns:
        The lock (rank 0 only; held until the end; ``None`` for a complete read-only store), the store's spec
        and its missing tiles.

    Raises:
        On every rank, rank 0's error: rank 0 raises its own, the others a ``RuntimeError`` quoting it
        (instead of waiting forever for the spec).
    """
    if not group.is_leader:
        received = group.broadcast(None)
        if isinstance(received, str):
            raise RuntimeError(received)
        return None, *received
    lock = None
    try:
        read_spec(out, store_class)  # refuse a file or foreign directory before putting a lock file in it
        try:
            lock = StoreLock(out)
        except StoreError as err:
            if err.errno not in _READ_ONLY or not _is_complete_and_verified(out, store_class, requested):
                raise
            group.broadcast((read_spec(out, store_class), []))
            return None, read_spec(out, store_class), []
        spec, missing = open_or_create()
    except BaseException as err:
        if lock is not None:
            lock.release()
        group.broadcast(f"rank 0 failed: {type(err).__name__}: {err}")
        raise
    group.broadcast((spec, missing))
    return lock, spec, missing


def _is_complete_and_verified(out: str | os.PathLike, store_class: type[ChunkedStore], requested: StoreSpec) -> bool:
    """Whether the store at ``out`` holds ``requested``, with every tile finished and verified."""
    existing = read_spec(out, store_class)
    if existing is None or existing.differences(requested):
        return False
    store = store_class(out)
    return store.complete and store.verify().ok


def open_or_create(
    out: str | os.PathLike,
    store_class: type[ChunkedStore],
    requested: StoreSpec,
    planned: Callable[[], StoreSpec],
    *,
    resume: bool,
    overwrite: bool,
    provenance: dict[str, Any] | None,
) -> tuple[Any, list[Tile]]:
    """Rank 0, under the lock: check the store (of type ``store_class``) at ``out`` against ``requested``, or create
    it for the spec ``planned()`` gives (``requested`` with its tile, and engine, chosen).

    Resuming verifies every finished tile: damaged ones are forgotten (and computed again), a lost ledger is
    rebuilt from the chunks that verify.

    Returns:
        The store's spec and its missing tiles.
    """
    existing = read_spec(out, store_class)  # also refuses to overwrite anything but a store of this class
    if existing is not None and not overwrite:
        if not resume:
            raise FileExistsError(
                f"{out} already holds a {store_class.WHAT}; pass resume=True to finish it, or overwrite=True "
                "(CLI: --overwrite) to replace it"
            )
        differences = existing.differences(requested)
        if differences:
            raise StoreMismatchError(
                f"{out} holds a different computation than this call:\n  - "
                + "\n  - ".join(differences)
                + "\nPass overwrite=True (CLI: --overwrite) to replace it, or choose another out path."
            )
        store = store_class(out, writable=True)
        store.discard_partial_writes()  # no rank writes yet
        report = store.repair()
        if report.damage:
            warnings.warn(
                f"{out}: {len(report.damaged_tiles)} finished tiles were damaged and are computed again: "
                + "; ".join(map(str, report.damage[:10]))
                + (" ..." if len(report.damage) > 10 else ""),
                stacklevel=4,
            )
        store.record_resume(provenance)
        return existing, store.missing_tiles
    spec = planned()
    return spec, store_class.create(out, spec, provenance=provenance).missing_tiles


def model_fingerprint(fm: FunctionalModel) -> str:
    """``sha256:…`` of the model's tensors (names, dtypes, shapes, bytes, in name order), which of them are
    differentiated, and its module tree (class of every submodule); code inside ``forward`` is covered by the
    behaviour probe instead (:func:`pntk.probe.behaviour`)."""
    h = hashlib.sha256()
    for name, m in fm.module.named_modules():
        h.update(f"module {name} {type(m).__module__}.{type(m).__qualname__}\n".encode())
    module_tensors = {**dict(fm.module.named_parameters()), **dict(fm.module.named_buffers())}
    for name in sorted(module_tensors):
        t = module_tensors[name].detach()
        h.update(f"tensor {name} {t.dtype} {list(t.shape)} {name in fm.params}\n".encode())
        h.update(t.cpu().contiguous().reshape(-1).view(torch.uint8).numpy().data)
    return "sha256:" + h.hexdigest()


def model_tensor_digests(fm: FunctionalModel) -> dict[str, str]:
    """``sha256:…`` of each of the model's tensors by name, and of its module tree under ``"(module tree)"``:
    what ranks compare to say which parameter differs."""
    tree = hashlib.sha256()
    for name, m in fm.module.named_modules():
        tree.update(f"module {name} {type(m).__module__}.{type(m).__qualname__}\n".encode())
    digests = {"(module tree)": "sha256:" + tree.hexdigest()}
    for name, t in {**dict(fm.module.named_parameters()), **dict(fm.module.named_buffers())}.items():
        h = hashlib.sha256(f"{t.dtype} {list(t.shape)} {name in fm.params}\n".encode())
        h.update(t.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
        digests[name] = "sha256:" + h.hexdigest()
    return digests


def _fill(
    store: KernelStore,
    eng: KernelEngine,
    fm: FunctionalModel,
    source1: RowSource,
    source2: RowSource,
    tiles: list[Tile],
    group: Group,
    progress: bool | None,
    log: Callable[[dict[str, Any]], None],
    *,
    done: int,
) -> None:
    """Compute this rank's ``tiles``, each written to the store by a background thread while the next is
    computed (at most one tile waits to be written)."""
    spec = store.spec
    if progress is None:
        progress = group.is_leader and sys.stderr.isatty()
    rank = f" rank {group.rank}/{group.world_size}" if group.world_size > 1 else ""
    resumed = f" (resuming: {done} done)" if done else ""
    bar = tqdm(total=len(tiles), desc=f"{spec.kind.value} tiles{rank}{resumed}", unit="tile", disable=not progress)

    def rows(source: RowSource, name: str) -> Callable[[slice], Inputs]:
        return lambda s: fm.prepare_inputs(_to_device(source.fetch(s), fm.device), name)

    per_entry = spec.O**2 if spec.kind.is_matrix_valued else 1
    start = time.perf_counter()
    entries_done = 0

    def write(t: Tile, values: torch.Tensor, seconds: float) -> None:
        nonlocal entries_done
        clock = time.perf_counter()
        store.write_tile(t, values, rank=group.rank, seconds=seconds)
        entries = (t.r1 - t.r0) * (t.c1 - t.c0) * per_entry * (1 if t.on_diagonal or not spec.symmetric else 2)
        log(
            {
                "i": t.i,
                "j": t.j,
                "rows": [t.r0, t.r1],
                "cols": [t.c0, t.c1],
                "entries": entries,
                "seconds": round(seconds, 6),
                "write_seconds": round(time.perf_counter() - clock, 6),
                "rank": group.rank,
                "time": round(time.time(), 3),
            }
        )
        entries_done += entries
        bar.set_postfix_str(f"{entries_done / (time.perf_counter() - start):.3g} entries/s", refresh=False)
        bar.update()

    fetch1 = rows(source1, "data1")
    fetch2 = fetch1 if spec.symmetric else rows(source2, "data2")
    with bar:
        write_behind(iter_tiles(eng, fm, tiles, fetch1, fetch2, spec.kind, symmetric=spec.symmetric), write)


def write_behind(computed: Iterator[tuple[Tile, Tensor]], write: Callable[[Tile, Tensor, float], None]) -> None:
    """``write(tile, values, seconds)`` each tile that ``computed`` yields, in a background thread while the next
    is computed (at most one tile waits to be written); ``seconds`` is the time its computation took.

    Raises:
        The writer's error, once the tile being computed when it happened is done.
    """
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="pntk-writer") as writer:
        pending = None
        clock = time.perf_counter()
        for t, values in computed:
            values, seconds = values.cpu(), time.perf_counter() - clock
            if pending is not None:
                pending.result()  # raises the writer's error, if any
            pending = writer.submit(write, t, values, seconds)
            clock = time.perf_counter()
        if pending is not None:
            pending.result()


@contextmanager
def tile_log(target: str | os.PathLike | IO[str] | None) -> Iterator[Callable[[dict[str, Any]], None]]:
    """A function that writes one JSON line per call to ``target`` (a path, appended to, or a text file)."""
    if target is None:
        yield lambda record: None
        return
    # One write per line, flushed: lines of several ranks appending to one file do not interleave.
    f = open(target, "a", buffering=1) if isinstance(target, (str, os.PathLike)) else target  # noqa: SIM115

    def write(record: dict[str, Any]) -> None:
        f.write(json.dumps(record) + "\n")
        f.flush()

    try:
        yield write
    finally:
        if f is not target:
            f.close()


def _to_device(x: Inputs, device: torch.device) -> Inputs:
    return x.map(lambda t: t.to(device))


def numpy_dtype(dtype: torch.dtype) -> str:
    try:
        return str(torch.empty(0, dtype=dtype).numpy().dtype)
    except TypeError:
        raise ValueError(f"a store holds NumPy numbers and NumPy has no {dtype}; pass dtype=torch.float32") from None
