"""The public kernel functions: :func:`kernel` and its shorthands :func:`entk`, :func:`pntk`, :func:`trace_ntk`.

They check the model and inputs, choose an engine and a tile size, and loop over tiles; the maths of one tile
lives in the engines.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterable, Iterator

import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from ..choices import parse_enum
from ..tiling import Tile, largest_tile, tile_plan
from .engine import KernelEngine
from .inputs import InputLike, Inputs
from .jacobian import JacobianEngine
from .kinds import Engine, Kind
from .model import FunctionalModel, functional_model
from .outputs import OutputLike
from .selection import ParamsLike
from .structured import StructuredEngine
from .vp import VPEngine

#: The engines that exist, by name; ``Engine.AUTO`` chooses among them.
ENGINES: dict[Engine, KernelEngine] = {
    Engine.JACOBIAN: JacobianEngine(),
    Engine.VP: VPEngine(),
    Engine.STRUCTURED: StructuredEngine(),
}

#: The most memory that the prepared row and column blocks of one tile may hold when the block size is chosen
#: (see :func:`block_memory`). Every extra row of tiles prepares its column blocks again, so small tiles
#: multiply the cost of the passes: at 4 GiB a WRN-16-2 trace NTK of 256 CIFAR images prepared 2.5 blocks'
#: worth of samples per sample and took 1.7 times as long as with one tile. Pass ``batch_size`` (or the
#: store's ``memory``) to hold less.
BLOCK_MEMORY = 8 << 30


def block_memory(device: torch.device) -> int:
    """The memory the prepared blocks of one tile may hold on ``device``: :data:`BLOCK_MEMORY`, or a third of
    the machine's memory (a quarter of a GPU's) where that is less."""
    try:
        if device.type == "cuda":
            total = torch.cuda.get_device_properties(device).total_memory // 4
        else:
            total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 3
    except (ValueError, OSError, AttributeError, RuntimeError):  # no sysconf names, or no device properties
        total = BLOCK_MEMORY
    return min(BLOCK_MEMORY, total)


def get_engine(engine: Engine | str, fm: FunctionalModel, kind: Kind, batch_size: int) -> KernelEngine:
    """The engine named by ``engine``; for ``"auto"``, the one expected to be fastest here.

    ``auto`` prefers the structured engine when layers with a rule hold at least half of the parameters;
    otherwise the Jacobian engine while two of its blocks fit :func:`block_memory`, and NTK-vector products
    beyond (they never hold a Jacobian).
    """
    engine = parse_enum(Engine, engine, "engine")
    if engine is not Engine.AUTO:
        if engine not in ENGINES:
            valid = ", ".join(repr(e.value) for e in (Engine.AUTO, *ENGINES))
            raise ValueError(f"engine {engine.value!r} is not available in this build; use one of {valid}")
        return ENGINES[engine]
    # The structured engine is exact, but only its ruled layers (dense, convolution, embedding, normalisation,
    # PReLU) are faster than per-sample gradients, by up to orders of magnitude; its other parameters cost
    # what they cost the Jacobian engine, plus a forward and backward pass. So it is chosen when ruled layers
    # hold most of P, and a model of mostly other parameters keeps the engine that suits its memory.
    structured = ENGINES[Engine.STRUCTURED]
    if structured.ruled_fraction(fm) >= 0.5:
        return structured
    jacobian = ENGINES[Engine.JACOBIAN]
    if 2 * jacobian.block_bytes(fm, batch_size, kind) <= block_memory(fm.device):
        return jacobian
    return ENGINES[Engine.VP]


def kernel(
    model: nn.Module,
    x1: InputLike,
    x2: InputLike | None = None,
    *,
    kind: Kind | str,
    engine: Engine | str = Engine.AUTO,
    batch_size: int | None = None,
    dtype: torch.dtype | None = None,
    params: ParamsLike = None,
    progress: bool | None = None,
    output: OutputLike = None,
    by_layer: bool = False,
) -> Tensor | dict[str, Tensor]:
    """A neural tangent kernel of ``model`` between ``x1`` and ``x2``.

    With ``J(x) = ∂f(x)/∂θ ∈ R^{O×P}``:

    - ``kind="entk"``: ``Θ(x, x') = J(x) J(x')ᵀ``, shape ``[N1, N2, O, O]``;
    - ``kind="trace"``: ``(1/O) tr Θ(x, x')``, shape ``[N1, N2]``;
    - ``kind="pntk"``: ``(1/O) 1ᵀ Θ(x, x') 1``, shape ``[N1, N2]``.

    Args:
        model: an ``nn.Module`` mapping a batch of ``B`` samples to ``[B, O]``, in eval mode if it has
            BatchNorm or Dropout. Its tensors are never modified.
        x1: ``[N1, *input]``, or a tuple/dict of such tensors passed to the model positionally/by keyword.
        x2: ``[N2, *input]`` likewise; ``None`` means ``x1`` and computes only the tiles on and above the
            diagonal, mirroring the rest.
        kind: ``"entk"``, ``"trace"`` or ``"pntk"`` (or a :class:`Kind`).
        engine: ``"auto"``, ``"jacobian"``, ``"vp"`` or ``"structured"`` (or an :class:`Engine`).
        batch_size: the tile edge ``B``, which bounds memory; default: the largest whose two prepared
            blocks and output tile fit in :func:`block_memory` (:func:`default_batch_size`).
        dtype: compute in this dtype, e.g. ``torch.float64``; default: the model's.
        params: parameters to differentiate: a dict by name (``torch.func`` style), name patterns
            (``"classifier.*"``, ``"*.lora_*"``) or a predicate ``(name, parameter) -> bool``; default: all
            trainable ones.
        progress: show a progress bar over tiles; default: when there are several tiles and stderr is a
            terminal.
        output: what of the model's output is ``f(x) ∈ R^O``: a callable, a field such as ``"logits"`` of a
            ``ModelOutput``/dict, or ``pntk.LabelWords(ids, position)`` for a language model's ``[B, L, V]``.
        by_layer: return the kernel's part from each parameter group (the module that owns the parameters)
            instead, ``{module path: kernel}``; the parts sum to the kernel.

    Returns:
        The kernel on the model's device, in ``dtype``: ``[N1, N2, O, O]`` or ``[N1, N2]``; with
        ``by_layer``, a dict of such kernels by module path.

    Raises:
        ValueError: unknown ``kind``/``engine``; a model whose samples interact or are random
            (training-mode BatchNorm/Dropout); no trainable parameter; NaN/Inf in inputs or parameters;
            inputs that are empty, disagree in sample count or trailing shape, or sit on another device;
            mixed dtypes; an output that is not ``[B, O]``.

    Example:
        >>> import torch, pntk
        >>> net = torch.nn.Sequential(torch.nn.Linear(3, 8), torch.nn.Tanh(), torch.nn.Linear(8, 2))
        >>> x = torch.randn(5, 3)
        >>> pntk.kernel(net, x, kind="entk").shape
        torch.Size([5, 5, 2, 2])
        >>> pntk.kernel(net, x, x[:3], kind="pntk").shape
        torch.Size([5, 3])
    """
    kind = parse_enum(Kind, kind, "kind")
    engine = parse_enum(Engine, engine, "engine")
    X1 = Inputs.from_user(x1, "x1")
    X2 = X1 if x2 is None else Inputs.from_user(x2, "x2")
    X1.check_compatible(X2)
    fm = functional_model(model, X1[:2] if len(X1) else X1, params=params, dtype=dtype, output=output)
    X1 = fm.prepare_inputs(X1, "x1")
    X2 = X1 if x2 is None else fm.prepare_inputs(X2, "x2")
    if batch_size is None:
        batch_size = default_batch_size(fm, kind, max(len(X1), len(X2)), engine, symmetric=x2 is None)
    elif not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    eng = get_engine(engine, fm, kind, batch_size)
    if by_layer:
        from .by_layer import tiled_parts

        return tiled_parts(eng, fm, X1, X2, kind, batch_size, symmetric=x2 is None, progress=progress)
    return _tiled(eng, fm, X1, X2, kind, batch_size, symmetric=x2 is None, progress=progress)


def default_batch_size(
    fm: FunctionalModel, kind: Kind, n: int, engine: Engine | str = Engine.AUTO, *, symmetric: bool = False
) -> int:
    """The largest tile edge ``B ≤ n`` whose two prepared blocks and output tile fit :func:`block_memory`.

    The blocks are sized for the engine that will run (``"auto"`` resolved as :func:`get_engine` does), so a
    light engine gets large tiles that amortise its per-block work. A ``symmetric`` kernel (``x2 = x1``) of
    ``n`` inputs whose one block fits is a single diagonal tile, which needs no second block.
    """
    engine = parse_enum(Engine, engine, "engine")
    sizer = get_engine(engine, fm, kind, 1)
    budget = block_memory(fm.device)
    if symmetric and tile_bytes(fm, sizer, kind, n, blocks=1) <= budget:
        return n
    return largest_tile(n, lambda B: tile_bytes(fm, sizer, kind, B), budget) or 1


def tile_bytes(
    fm: FunctionalModel, eng: KernelEngine, kind: Kind, B: int, *, output_copies: int = 1, blocks: int = 2
) -> int:
    """Memory of one ``B × B`` tile: ``output_copies`` buffers of its values and ``blocks`` prepared blocks."""
    entries = B * B * (fm.num_outputs**2 if kind.is_matrix_valued else 1)
    return output_copies * entries * fm.dtype.itemsize + blocks * eng.block_bytes(fm, B, kind)


def _tiled(
    eng: KernelEngine,
    fm: FunctionalModel,
    X1: Inputs,
    X2: Inputs,
    kind: Kind,
    batch_size: int,
    *,
    symmetric: bool,
    progress: bool | None,
) -> Tensor:
    """Fill the kernel tile by tile, preparing each row block once and mirroring when symmetric."""
    N1, N2, O = len(X1), len(X2), fm.num_outputs
    shape = (N1, N2, O, O) if kind.is_matrix_valued else (N1, N2)
    out = torch.empty(shape, device=fm.device, dtype=fm.dtype)
    plan = tile_plan(N1, N2, batch_size, symmetric=symmetric)
    if progress is None:
        progress = len(plan) > 1 and sys.stderr.isatty()
    tiles = iter_tiles(eng, fm, plan, X1.__getitem__, X2.__getitem__, kind, symmetric=symmetric)
    for t, tile in tqdm(tiles, total=len(plan), desc=f"{kind.value} tiles", unit="tile", disable=not progress):
        out[t.rows, t.cols] = tile
        if symmetric and not t.on_diagonal:
            out[t.cols, t.rows] = transpose_tile(tile).contiguous()  # a blocked transpose, then a plain copy
    return out


def iter_tiles(
    eng: KernelEngine,
    fm: FunctionalModel,
    plan: Iterable[Tile],
    rows: Callable[[slice], Inputs],
    cols: Callable[[slice], Inputs],
    kind: Kind,
    *,
    symmetric: bool,
) -> Iterator[tuple[Tile, Tensor]]:
    """Each tile of ``plan`` with its values, preparing a row block once for consecutive tiles of its row.

    A tile depends only on its rows, columns, engine and dtype, never on the plan around it: any subset of
    a plan, in any process, gives the same numbers.

    Args:
        eng: the engine.
        fm: the model.
        plan: tiles, best in row-major order (each change of row prepares a row block).
        rows: ``x1[rows]`` for a slice, as inputs ready for ``fm``.
        cols: ``x2[cols]`` likewise; with ``symmetric`` the same inputs as ``rows``.
        kind: the kind of kernel.
        symmetric: ``x2`` is ``x1``: diagonal tiles reuse the row block and are symmetrised exactly.

    Yields:
        ``(tile, values)``, values ``[B1, B2, O, O]`` for the eNTK, ``[B1, B2]`` otherwise, detached.
    """
    row, a = None, None
    for t in plan:
        if t.rows != row:
            row, a = t.rows, eng.prepare(fm, rows(t.rows), kind)
        same = symmetric and t.on_diagonal
        b = a if same else eng.prepare(fm, cols(t.cols), kind)
        tile = eng.contract(fm, a, b, kind, same=same).detach()
        if same:
            # Exact symmetry despite rounding; the contiguous copy makes the sum stream through memory (a
            # transposed operand is read across cache lines, several times slower on large tiles).
            tile = (tile + transpose_tile(tile).contiguous()) / 2
        yield t, tile


def transpose_tile(tile: Tensor) -> Tensor:
    """The tile of ``kernel(x2, x1)`` from that of ``kernel(x1, x2)``: ``Θ(x', x) = Θ(x, x')ᵀ``."""
    return tile.permute(1, 0, 3, 2) if tile.dim() == 4 else tile.T


def entk(model: nn.Module, x1: InputLike, x2: InputLike | None = None, **options) -> Tensor:
    """The empirical NTK ``Θ``, ``[N1, N2, O, O]``: :func:`kernel` with ``kind="entk"``; by module with ``by_layer``."""
    return kernel(model, x1, x2, kind=Kind.ENTK, **options)  # type: ignore[return-value]  # dict with by_layer


def pntk(model: nn.Module, x1: InputLike, x2: InputLike | None = None, **options) -> Tensor:
    """The pseudo-NTK ``K``, ``[N1, N2]``: :func:`kernel` with ``kind="pntk"``."""
    return kernel(model, x1, x2, kind=Kind.PNTK, **options)  # type: ignore[return-value]  # dict with by_layer


def trace_ntk(model: nn.Module, x1: InputLike, x2: InputLike | None = None, **options) -> Tensor:
    """The trace NTK ``(1/O) tr Θ``, ``[N1, N2]``: :func:`kernel` with ``kind="trace"``."""
    return kernel(model, x1, x2, kind=Kind.TRACE, **options)  # type: ignore[return-value]  # dict with by_layer
