"""One plan for every path: which engine computes a kernel, how its work is cut, and what that costs.

Every executor — the in-memory kernel (:func:`pntk.kernel`), the store (:func:`pntk.compute`) and the paths
built on them — asks this module how to split its work under one memory budget; none sizes its own.

# NOTE: [memory budget]
# The budget bounds the memory of the kernel work, not of the interpreter, PyTorch, the model and the inputs
# the caller holds (nor, for pntk.kernel, the result it returns). A tile of edge t holds, at its peak, two
# prepared blocks (rows and columns: engine.block_bytes(t) each) and `buffers` tile-sized arrays of t²·E
# numbers (E = O² for the eNTK, 1 otherwise): in memory, the tile being computed and, on the diagonal, the two
# temporaries of its symmetrisation; in a store, also the previous tile, which the background writer holds
# with its mirror image and Zarr's chunk buffer. The structured engine also holds its bounded working memory W
# (a pass's activations, unfolded inputs, a contraction's Grams), the vector-product engine its chunk of
# columns (the contraction's part of W: parameter-space vectors and the activations of their passes).
# Options.safety covers what the estimate leaves out (temporaries around the bounded parts, and the allocator's
# slack: with glibc's heap, a 32 MB budget's resident peak varied by 5 MB from run to run, while the bytes held
# stayed below the estimate). The tile is the largest edge whose estimate fits:
#     safety · (buffers · t²·E·itemsize + 2 · block_bytes(t) + W) ≤ memory.
#
# NOTE: [operator memory]
# A product ``K V`` passes over the samples in chunks. A chunk of ``c`` samples holds its prepared factors
# (the structured engine's ``block_bytes``, which also bounds the activations of ruled layers that a pass
# keeps) and, per column of ``V`` that shares the pass, the intermediates of the factored products (one
# tensor the size of every ruled layer's output per column, ``E = W·D`` in the pull and ``H = A·U`` in the
# push, bounded by one sample's pNTK factors) or, for NTK-vector products, one set of activations per column.
# Columns beyond :data:`COLUMNS` pass in groups that share each chunk's factors. The factors of all chunks are
# cached across products when they fit half of the budget, so that a product of the pNTK, whose cotangents do
# not depend on ``V``, costs no network pass.
"""

from __future__ import annotations

import dataclasses
import enum
import math
import os
import time
from dataclasses import dataclass, field
from typing import cast

import torch
from torch import nn

from .choices import parse_enum
from .kernels.engine import KernelEngine
from .kernels.inputs import InputLike, Inputs
from .kernels.jacobian import JacobianEngine
from .kernels.kinds import Engine, Kind
from .kernels.model import FunctionalModel
from .kernels.outputs import OutputLike
from .kernels.registry import ENGINES
from .kernels.selection import ParamsLike
from .kernels.structured import StructuredEngine, WorkingMemory
from .kernels.structured.plan import pairs_per_sample
from .kernels.vp import VPEngine
from .tiling import Tile, format_bytes, largest_tile, parse_bytes, tile_plan


@dataclass(frozen=True)
class Options:
    """The knobs of planning, in one place; pass ``options=`` to the kernel functions to change them.

    Attributes:
        default_memory_cap: the largest default budget, in bytes. Each extra row of tiles prepares its
            column blocks again, so small tiles multiply the cost of the passes: a WRN-16-2 trace NTK of 256
            CIFAR images took 1.7 times as long with a 4 GiB block budget as with one tile.
        machine_fraction: the share of the machine's memory that the default budget takes on a CPU.
        device_fraction: the share of an accelerator's memory that the default budget takes.
        safety: the factor on the estimate that covers what it leaves out (the ``[memory budget]`` note).
        kernel_buffers: tile-sized arrays of the in-memory kernel's work: the tile and its mirror image (or, on
            the diagonal, its transpose and their mean), and the engine's result before it is detached.
        store_buffers: tile-sized arrays of the store's work: also the tile being written, its mirror, Zarr's
            chunk buffer and the copy its checksum codec makes.
        auto_jacobian_edge: for ``engine="auto"`` on a model mostly without rules, the tile edge at which
            the Jacobian engine's blocks must still fit the budget; beyond, NTK-vector products (which never
            hold a Jacobian) are chosen.
        product_columns: the most columns of ``V`` that share one pass over the samples in a kernel
            operator's product (more are split into groups of this many; :func:`plan_product`).
        vp_columns: the share of the budget that the vector-product engine's chunk of columns takes (its
            parameter-space vectors and the activations of their passes); more columns share each pass.
        working: the most working memory the structured and vector-product engines use beyond their blocks
            and tiles
            (:class:`~pntk.kernels.structured.WorkingMemory`); a plan lowers each part to a share of its
            budget (an eighth for a pass's activations and a contraction's Grams, a sixteenth for unfolded
            inputs) and counts what it keeps in the tile's memory.
    """

    default_memory_cap: int = 12 << 30
    machine_fraction: float = 0.5
    device_fraction: float = 0.375
    safety: float = 1.5
    kernel_buffers: int = 4
    store_buffers: int = 7
    auto_jacobian_edge: int = 64
    product_columns: int = 32
    vp_columns: float = 0.25
    working: WorkingMemory = field(default_factory=WorkingMemory)


DEFAULT_OPTIONS = Options()


class Executor(str, enum.Enum):
    """What runs a plan: the in-memory kernel or the store. They differ only in how many tile-sized buffers
    their loops hold (:class:`Options`)."""

    KERNEL = "kernel"
    STORE = "store"


def machine_memory(device: torch.device) -> int | None:
    """Total memory of ``device`` (the machine's RAM for a CPU) in bytes, or ``None`` if unknown."""
    try:
        if device.type == "cuda":
            return int(torch.cuda.get_device_properties(device).total_memory)
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError, RuntimeError):  # no sysconf names, or no device properties
        return None


def memory_budget(device: torch.device, memory: int | str | None = None, options: Options = DEFAULT_OPTIONS) -> int:
    """The memory budget in bytes: ``memory`` when given (``"4G"``, ``"512MB"``, ``"2GiB"`` or bytes), else
    ``Options.machine_fraction`` of the machine's memory (``Options.device_fraction`` of a GPU's), at most
    ``Options.default_memory_cap``.

    >>> memory_budget(torch.device("cpu"), "4G")
    4000000000
    """
    if memory is not None:
        return parse_bytes(memory)
    total = machine_memory(device)
    if total is None:
        return options.default_memory_cap
    fraction = options.machine_fraction if device.type == "cpu" else options.device_fraction
    return min(options.default_memory_cap, int(total * fraction))


def tile_memory(
    fm: FunctionalModel,
    eng: KernelEngine,
    kind: Kind,
    t: int,
    *,
    buffers: int,
    blocks: int = 2,
    working: int = 0,
    options: Options,
) -> int:
    """The estimated peak memory of the work on one ``t × t`` tile, in bytes (the ``[memory budget]`` note).

    Args:
        fm: the model.
        eng: the engine that prepares the blocks.
        kind: the kernel's kind.
        t: the tile edge.
        buffers: tile-sized arrays held at once by the executor.
        blocks: prepared blocks held at once (1 for a symmetric kernel that is a single tile).
        working: the engine's working memory beyond its blocks, in bytes. The safety factor covers it too:
            what a pass allocates around its bounded parts (autograd's saved tensors, the allocator's
            fragmentation) grows with it, by about 4 MB on a ConvNet's 458-sample block.
        options: supplies the safety factor.
    """
    entries = t * t * (fm.num_outputs**2 if kind.is_matrix_valued else 1)
    return int(
        options.safety * (buffers * entries * fm.dtype.itemsize + blocks * eng.block_bytes(fm, t, kind) + working)
    )


#: Passes over the ruled layers that preparing a block with the structured engine costs, in units of its
#: forward multiply-adds (:attr:`~pntk.kernels.structured.Costs.sample`): the forward pass, the backward pass
#: to the layer outputs, and the per-sample gradients of materialised layers.
STRUCTURED_PASSES = 3


def resolve_engine(
    engine: Engine | str,
    fm: FunctionalModel,
    kind: Kind,
    budget: int,
    *,
    buffers: int,
    options: Options = DEFAULT_OPTIONS,
    samples: int | None = None,
    pairs: int | None = None,
) -> KernelEngine:
    """The engine named by ``engine``; for ``"auto"``, the one expected to be fastest here.

    ``auto`` prefers the structured engine when layers with a rule hold at least half of the parameters: only
    they are faster than per-sample gradients (by up to orders of magnitude). Its parameters without a rule
    take their per-sample gradients from the Jacobian engine, whose vectorised pass over the whole network
    then comes on top of the structured engine's own passes. So when some parameters fall back and ``vmap``
    traces the model, a cost model decides: the structured engine is chosen when its contraction saves more
    multiply-adds over the ``pairs`` of samples than its own passes over the ``samples`` cost
    (``STRUCTURED_PASSES`` forward passes through the ruled layers), else the Jacobian engine if its tile of
    edge ``Options.auto_jacobian_edge`` fits the budget. (On a short-sequence transformer whose layers are all
    materialised, the contractions cost the same and the Jacobian engine's one pass wins.) Where ``vmap``
    cannot trace the model, the Jacobian engine loops over samples for all of ``P`` and the structured one
    for its few unruled parameters only: the structured engine (a T5-style model's pNTK took 3.9 s with the
    Jacobian engine, 1.4 s with the structured one, N = 256). With most
    parameters unruled: the Jacobian engine while that tile fits the budget, and NTK-vector products beyond
    (they never hold a Jacobian).

    Args:
        samples, pairs: the samples that pass through the network and the pairs of samples contracted
            (``N`` and ``N(N+1)/2`` for a symmetric kernel); unknown, the contraction is taken to dominate.

    Raises:
        ValueError: an unknown engine name, or one not available in this build.
    """
    engine = parse_enum(Engine, engine, "engine")
    if engine is not Engine.AUTO:
        if engine not in ENGINES:
            valid = ", ".join(repr(e.value) for e in (Engine.AUTO, *ENGINES))
            raise ValueError(f"engine {engine.value!r} is not available in this build; use one of {valid}")
        return ENGINES[engine]
    structured = cast(StructuredEngine, ENGINES[Engine.STRUCTURED])
    jacobian = cast(JacobianEngine, ENGINES[Engine.JACOBIAN])
    jacobian_fits = tile_memory(fm, jacobian, kind, options.auto_jacobian_edge, buffers=buffers, options=options)
    if structured.ruled_fraction(fm, kind) >= 0.5:
        costs = structured.costs(fm, kind)
        if costs is None or costs.fallback == 0 or jacobian_fits > budget or not jacobian.traces(fm, kind):
            return structured
        Q = pairs_per_sample(fm, kind)
        saving = (pairs or 1) * (Q * fm.num_params - costs.pair)
        passes = (samples or 0) * STRUCTURED_PASSES * costs.sample
        return structured if saving > passes else jacobian
    if jacobian_fits <= budget:
        return jacobian
    return ENGINES[Engine.VP]


@dataclass(frozen=True)
class Plan:
    """How a kernel of ``N1 × N2`` samples is computed: engine, tiles and their predicted memory.

    A tile depends only on its rows, columns, engine and dtype, never on the plan around it, so the kernel
    functions and the store give bit-identical results for plans with the same engine and tile edge.

    Attributes:
        kind: the kernel's kind.
        engine: the engine that runs (``"auto"`` resolved).
        N1, N2: samples of ``x1`` and ``x2``.
        O: outputs of the network; P: differentiated parameters.
        symmetric: ``x2`` is ``x1``: only the tiles on and above the diagonal are computed.
        tile: the tile edge (the store's chunk edge).
        memory: the budget in bytes.
        tile_bytes: the predicted peak memory of the work on one tile (the ``[memory budget]`` note).
        kernel_bytes: the bytes of the whole kernel (what :func:`pntk.kernel` returns).
        executor: the loop that runs the plan.
        dtype: the dtype of the computation.
        working: the structured and vector-product engines' working memory under this plan's budget (part of
            ``tile_bytes``).
        seconds: the predicted time, when measured (:func:`plan` with ``measure=True``): a probe tile's
            preparation per sample and contraction per pair of samples, scaled to the plan's counts.
    """

    kind: Kind
    engine: str
    N1: int
    N2: int
    O: int
    P: int
    symmetric: bool
    tile: int
    memory: int
    tile_bytes: int
    kernel_bytes: int
    executor: Executor
    dtype: torch.dtype
    tiles: list[Tile] = field(repr=False, compare=False)
    working: WorkingMemory = field(default_factory=WorkingMemory)
    seconds: float | None = None

    @property
    def pairs(self) -> int:
        """Pairs of samples whose kernel entries the tiles compute (a diagonal tile computes its upper half)."""
        total = 0
        for t in self.tiles:
            B1, B2 = t.r1 - t.r0, t.c1 - t.c0
            total += B1 * (B1 + 1) // 2 if self.symmetric and t.on_diagonal else B1 * B2
        return total

    @property
    def prepared_samples(self) -> int:
        """Samples passed through the network to prepare blocks: each row block once, and each column block
        once per tile that is not on the diagonal of a symmetric kernel."""
        row_blocks: dict[int, int] = {}
        columns = 0
        for t in self.tiles:
            row_blocks[t.i] = t.r1 - t.r0
            if not (self.symmetric and t.on_diagonal):
                columns += t.c1 - t.c0
        return sum(row_blocks.values()) + columns

    def __str__(self) -> str:
        side = f"{self.N1} × {self.N2}" + (" (symmetric: tiles on and above the diagonal)" if self.symmetric else "")
        shape = (
            f"[{self.N1}, {self.N2}, {self.O}, {self.O}]" if self.kind.is_matrix_valued else f"[{self.N1}, {self.N2}]"
        )
        return "\n".join(
            [
                f"{self.kind.value} kernel {shape}, {self.dtype}, {format_bytes(self.kernel_bytes)}",
                f"  model: O = {self.O} outputs, P = {self.P:,} parameters",
                f"  engine: {self.engine}",
                f"  samples: {side}",
                f"  tiles: {len(self.tiles)} of edge {self.tile}; {self.prepared_samples:,} samples prepared",
                f"  memory: {format_bytes(self.tile_bytes)} per tile of a {format_bytes(self.memory)} budget "
                f"({self.executor.value} executor)",
            ]
            + ([f"  time: about {_format_seconds(self.seconds)} (measured on a probe tile)"] if self.seconds else [])
        )


def _format_seconds(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.3g} s"
    return f"{seconds / 60:.3g} min" if seconds < 7200 else f"{seconds / 3600:.3g} h"


def measure(plan: Plan, fm: FunctionalModel, x: Inputs, *, edge: int = 32) -> Plan:
    """``plan`` with its predicted time, from probe tiles of ``edge`` and ``4·edge`` samples of ``x``.

    Two sizes separate each step's fixed cost per block from its cost per sample (preparation) or per pair
    of samples (contraction); the plan's counts of blocks, tiles, samples and pairs scale them. Small probes
    multiply less efficiently than full tiles, so the estimate errs long: it is meant for minutes versus
    hours, not for benchmarks.
    """
    eng = engine_of(plan)
    sizes = sorted({max(2, min(edge, len(x))), max(2, min(4 * edge, len(x)))})
    eng.prepare(fm, x[:2], plan.kind)  # warm-up: first calls load kernels and plan layers
    steps = []
    for n in sizes:
        clock = time.perf_counter()
        block = eng.prepare(fm, x[:n], plan.kind)
        prepared = time.perf_counter() - clock
        clock = time.perf_counter()
        eng.contract(fm, block, block, plan.kind, same=False)
        steps.append((n, prepared, time.perf_counter() - clock))
    (n0, p0, c0), (n1, p1, c1) = steps[0], steps[-1]
    per_sample = (p1 - p0) / (n1 - n0) if n1 > n0 else p1 / n1
    per_pair = (c1 - c0) / (n1 * n1 - n0 * n0) if n1 > n0 else c1 / (n1 * n1)
    per_block = max(0.0, p0 - per_sample * n0)
    per_tile = max(0.0, c0 - per_pair * n0 * n0)
    blocks = len({t.i for t in plan.tiles}) + sum(1 for t in plan.tiles if not (plan.symmetric and t.on_diagonal))
    seconds = (
        per_block * blocks
        + max(per_sample, 0.0) * plan.prepared_samples
        + per_tile * len(plan.tiles)
        + max(per_pair, 0.0) * plan.pairs
    )
    return dataclasses.replace(plan, seconds=seconds)


def make_plan(
    fm: FunctionalModel,
    kind: Kind | str,
    N1: int,
    N2: int,
    *,
    symmetric: bool,
    engine: Engine | str = Engine.AUTO,
    batch_size: int | None = None,
    memory: int | str | None = None,
    executor: Executor | str = Executor.KERNEL,
    options: Options = DEFAULT_OPTIONS,
) -> Plan:
    """The plan for a kernel of ``fm`` between ``N1`` and ``N2`` samples: the one function that sizes tiles.

    The engine is resolved once (:func:`resolve_engine`). The tile edge is ``batch_size`` when given (it must
    fit ``memory`` when that is given too), else planned from the budget (:func:`memory_budget`): with ``t``
    the largest edge whose estimate fits, ``k = ⌈n/t⌉`` tiles per side of edge ``⌈n/k⌉``, so that the last tile
    is not much shorter than the others (Zarr stores edge chunks at full size). A symmetric kernel whose one
    block fits is a single tile, which needs no second block.

    Raises:
        ValueError: a ``batch_size`` that is not a positive integer or does not fit an explicit ``memory``;
            a budget too small for even a 1 × 1 tile.
    """
    kind = parse_enum(Kind, kind, "kind")
    executor = parse_enum(Executor, executor, "executor")
    buffers = options.kernel_buffers if executor is Executor.KERNEL else options.store_buffers
    budget = memory_budget(fm.device, memory, options)
    pairs = N1 * (N1 + 1) // 2 if symmetric else N1 * N2
    samples = N1 if symmetric else N1 + N2
    eng = resolve_engine(engine, fm, kind, budget, buffers=buffers, options=options, samples=samples, pairs=pairs)
    n = max(N1, N2)
    working = working_memory(budget, options)
    if eng.name == Engine.VP.value:
        # Vector products prepare nothing, so their chunk of columns may take a larger share.
        working = dataclasses.replace(working, contract_bytes=max(1, int(budget * options.vp_columns)))
    # The structured engine's passes and contractions, or the vector products' chunk of columns.
    extra = {Engine.STRUCTURED.value: working.total, Engine.VP.value: working.contract_bytes}.get(eng.name, 0)

    def need(t: int, blocks: int = 2) -> int:
        return tile_memory(fm, eng, kind, t, buffers=buffers, blocks=blocks, working=extra, options=options)

    if batch_size is not None:
        if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
        if memory is not None and need(min(batch_size, n)) > budget:
            raise ValueError(
                f"batch_size={batch_size} needs about {format_bytes(need(min(batch_size, n)))}, more than "
                f"memory={memory!r}; lower batch_size, raise memory, or leave batch_size out to have it planned"
            )
        tile = batch_size
    elif symmetric and need(n, blocks=1) <= budget:
        tile = n
    else:
        largest = largest_tile(n, need, budget)
        if largest is None:
            raise ValueError(
                f"a memory budget of {format_bytes(budget)} is too small for even a 1 × 1 tile of this model "
                f"with the {eng.name} engine (about {format_bytes(need(1))}); raise memory"
            )
        tile = math.ceil(n / math.ceil(n / largest))
    entries = N1 * N2 * (fm.num_outputs**2 if kind.is_matrix_valued else 1)
    return Plan(
        kind=kind,
        engine=eng.name,
        N1=N1,
        N2=N2,
        O=fm.num_outputs,
        P=fm.num_params,
        symmetric=symmetric,
        tile=tile,
        memory=budget,
        tile_bytes=need(min(tile, n), blocks=1 if symmetric and tile >= n else 2),
        kernel_bytes=entries * fm.dtype.itemsize,
        executor=executor,
        dtype=fm.dtype,
        tiles=tile_plan(N1, N2, tile, symmetric=symmetric),
        working=working,
    )


def working_memory(budget: int, options: Options = DEFAULT_OPTIONS) -> WorkingMemory:
    """The structured engine's working memory under a budget: ``Options.working``, each part at most its share
    of the budget (see :class:`Options`)."""
    w = options.working
    return dataclasses.replace(
        w,
        unfold_bytes=max(1, min(w.unfold_bytes, budget // 16)),
        capture_bytes=max(1, min(w.capture_bytes, budget // 8)),
        contract_bytes=max(1, min(w.contract_bytes, budget // 8)),
    )


def engine_of(plan: Plan | str) -> KernelEngine:
    """The engine object that runs ``plan`` (with its working memory), or the default one of this name."""
    if isinstance(plan, Plan):
        if plan.engine == Engine.STRUCTURED.value:
            return StructuredEngine(plan.working)
        if plan.engine == Engine.VP.value:
            return VPEngine(plan.working)
        return ENGINES[Engine(plan.engine)]
    return ENGINES[Engine(plan)]


def plan(
    model: nn.Module,
    x1: InputLike,
    x2: InputLike | None = None,
    *,
    kind: Kind | str,
    engine: Engine | str = Engine.AUTO,
    batch_size: int | None = None,
    memory: int | str | None = None,
    dtype: torch.dtype | str | None = None,
    params: ParamsLike = None,
    device: torch.device | str | None = None,
    output: OutputLike = None,
    executor: Executor | str = Executor.KERNEL,
    options: Options = DEFAULT_OPTIONS,
    measure_time: bool = False,
) -> Plan:
    """The plan :func:`pntk.kernel` (``executor="kernel"``) or :func:`pntk.compute` (``"store"``) would run.

    Args are those of :func:`pntk.kernel`; ``x1`` and ``x2`` may be anything it accepts. Only a few samples
    are read (to check the model), so planning a huge kernel is cheap. With ``measure_time=True`` probe tiles of
    32 and 128 samples are computed to predict the time (:func:`measure`).

    Returns:
        A :class:`Plan`; ``print(plan)`` describes it.

    Example:
        >>> import torch, pntk
        >>> net = torch.nn.Sequential(torch.nn.Linear(3, 8), torch.nn.Tanh(), torch.nn.Linear(8, 2))
        >>> p = pntk.plan(net, torch.randn(100, 3), kind="entk", memory="200kB")
        >>> p.engine, p.N1, p.tile < 100, len(p.tiles) > 1
        ('structured', 100, True, True)
    """
    from .kernels.api import model_and_inputs  # the kernels package imports this module

    fm, source1, source2 = model_and_inputs(
        model, x1, x2, params=params, dtype=dtype, device=device, output=output, check_samples=False
    )
    result = make_plan(
        fm,
        kind,
        len(source1),
        len(source2),
        symmetric=x2 is None,
        engine=engine,
        batch_size=batch_size,
        memory=memory,
        executor=executor,
        options=options,
    )
    if not measure_time:
        return result
    probe = source1.fetch(slice(0, 128)).map(lambda t: t.to(fm.device))
    return measure(result, fm, fm.prepare_inputs(probe, "x1"))


@dataclass(frozen=True)
class ProductPlan:
    """How products of one operator are split.

    Attributes:
        chunk: samples per chunk of a pass.
        columns: columns of ``V`` per group, whose intermediates a chunk holds at once (the parameter-space
            vectors of all groups, ``k·P`` numbers, are held through a product).
        cache: keep every chunk's factors between products.
        sample_bytes: the prepared factors of one sample (what caching costs per sample).
        column_bytes: the intermediates of one column per sample and pass.
        memory: the budget in bytes.
    """

    chunk: int
    columns: int
    cache: bool
    sample_bytes: int
    column_bytes: int
    memory: int


def plan_product(
    fm: FunctionalModel,
    kind: Kind,
    num_samples: int,
    *,
    memory: int | str | None = None,
    batch_size: int | None = None,
    rows_per_sample: int = 1,
    options: Options = DEFAULT_OPTIONS,
) -> ProductPlan:
    """The chunking of a kernel operator's products under ``memory`` (the note [operator memory]).

    Args:
        fm: the model.
        kind: the kernel's kind (its factors hold ``R = 1`` cotangent per sample for the pNTK, ``O`` otherwise).
        num_samples: the distinct samples whose factors a product reads (``N1``, plus ``N2`` when ``x2`` is
            not ``x1``).
        memory: the budget, bytes or a string such as ``"2GB"``; default :func:`memory_budget`'s.
        batch_size: samples per chunk, overriding the budget's choice.
        rows_per_sample: parameter-space vectors one column of ``V`` needs (``O`` for the trace NTK).

    Returns:
        The plan; see the note [operator memory].

    Raises:
        ValueError: ``batch_size`` is not a positive integer, or ``memory`` not a size.
    """
    budget = memory_budget(fm.device, memory, options)
    engine = ENGINES[Engine.STRUCTURED]
    prepared = Kind.PNTK if kind is Kind.PNTK else Kind.ENTK
    sample_bytes = max(1, engine.block_bytes(fm, 1, prepared))
    # One column's intermediates per sample: the size of one row of factors (the pNTK's).
    column_bytes = max(1, engine.block_bytes(fm, 1, Kind.PNTK))
    columns = max(1, options.product_columns // rows_per_sample)
    # Per sample of a chunk: its factors, and two intermediates per parameter-space vector of a group.
    per_sample = sample_bytes + 2 * columns * rows_per_sample * column_bytes
    if batch_size is not None:
        if not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
        chunk = batch_size
    else:
        chunk = max(1, min(num_samples, (budget // 4) // per_sample))
    cache = num_samples * sample_bytes <= budget // 2
    return ProductPlan(
        chunk=chunk, columns=columns, cache=cache, sample_bytes=sample_bytes, column_bytes=column_bytes, memory=budget
    )


def product_engine(fm: FunctionalModel, kind: Kind, plan: ProductPlan, x: Inputs) -> Engine:
    """The engine ``"auto"`` picks for an operator's products.

    The structured engine where rules hold at least half of ``P`` (its cached factors make a product two
    matmuls per layer and no network pass), vector products otherwise. One exception: an eNTK whose factors do
    not fit the cache would prepare them again for every product (a forward and ``O`` backward passes per
    chunk, on both sides), where vector products cost one ``vjp`` and one ``jvp`` whatever ``O``: measured on
    MNIST-1D's MLP 40-512-512-10 (``O = 10``) at ``N = 30,000``, 4.0 s against 0.77 s a product (at
    ``N = 10,000``, cached, 0.22 s against 0.29 s). Models without forward-mode AD keep the structured engine.

    Args:
        fm: the functional model.
        kind: the kernel's kind.
        plan: the operator's plan (:func:`plan_product`).
        x: inputs of the model (one sample is enough), to check forward-mode AD.

    Returns:
        ``Engine.STRUCTURED`` or ``Engine.VP``.
    """
    if StructuredEngine().ruled_fraction(fm) < 0.5:
        return Engine.VP
    if kind is Kind.ENTK and not plan.cache and _has_forward_mode(fm, x[:1]):
        return Engine.VP
    return Engine.STRUCTURED


def _has_forward_mode(fm: FunctionalModel, x: Inputs) -> bool:
    """Whether ``torch.func.jvp`` runs through the model (fused attention kernels, for one, have no forward mode)."""
    tangents = {name: torch.zeros_like(p) for name, p in fm.params.items()}
    try:
        torch.func.jvp(lambda params: fm(params, x), (fm.params,), (tangents,))
    except (RuntimeError, NotImplementedError):
        return False
    return True


def pass_chunk(
    fm: FunctionalModel,
    n: int,
    per_sample_bytes: int,
    *,
    memory: int | str | None = None,
    batch_size: int | None = None,
    options: Options = DEFAULT_OPTIONS,
) -> int:
    """Samples per chunk of a pass whose work holds ``per_sample_bytes`` per sample (a sketch's factors and
    projections): ``batch_size`` when given, else as many as fit the budget with the safety factor.

    Raises:
        ValueError: ``batch_size`` is not a positive integer, or ``memory`` not a size.
    """
    if batch_size is not None:
        if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
        return batch_size
    budget = memory_budget(fm.device, memory, options)
    return max(1, min(n, int(budget // (options.safety * max(1, per_sample_bytes)))))
