"""The public kernel functions: :func:`kernel` and its shorthands :func:`entk`, :func:`pntk`, :func:`trace_ntk`.

They check the model and inputs, choose an engine and a tile size, and loop over tiles; the maths of one tile
lives in the engines.
"""

from __future__ import annotations

import sys
import warnings
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from ..choices import parse_enum
from ..errors import StructureChangedError
from ..planning import DEFAULT_OPTIONS, Executor, Options, Plan, engine_of, make_plan
from ..sources import RowSource, row_source
from ..tiling import Tile
from .engine import KernelEngine
from .inputs import Inputs
from .kinds import Engine, Kind
from .model import FunctionalModel, functional_model
from .outputs import OutputLike
from .selection import ParamsLike

#: What the kernel functions take as inputs (see :func:`pntk.sources.row_source`): a tensor or NumPy array
#: ``[N, *input]``, a tuple/dict of them, a Dataset, or a non-shuffling DataLoader.
InputLike = Any


def kernel(
    model: nn.Module,
    x1: InputLike,
    x2: InputLike | None = None,
    *,
    kind: Kind | str,
    engine: Engine | str = Engine.AUTO,
    batch_size: int | None = None,
    memory: int | str | None = None,
    dtype: torch.dtype | str | None = None,
    device: torch.device | str | None = None,
    params: ParamsLike = None,
    progress: bool | None = None,
    options: Options = DEFAULT_OPTIONS,
    check_samples: bool = True,
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
        x1: the ``N1`` inputs: a tensor or NumPy array ``[N1, *input]``, a tuple/dict of them (passed to the
            model positionally/by keyword), a :class:`pntk.data.Dataset`, a map-style torch Dataset whose items
            are inputs or ``(input, label)`` tuples, or a non-shuffling DataLoader over one (as
            :func:`pntk.compute` takes). They are moved to the computation's device.
        x2: the ``N2`` inputs likewise; ``None`` means ``x1`` and computes only the tiles on and above the
            diagonal, mirroring the rest.
        kind: ``"entk"``, ``"trace"`` or ``"pntk"`` (or a :class:`Kind`).
        engine: ``"auto"``, ``"jacobian"``, ``"vp"`` or ``"structured"`` (or an :class:`Engine`). When ``"auto"``
            chose the structured engine and a block of the model does not follow the plan found on its probe
            samples (:class:`~pntk.errors.StructureChangedError`), it warns and computes the kernel with the
            Jacobian engine instead.
        batch_size: the tile edge ``B``; default: planned from ``memory`` (:func:`pntk.planning.make_plan`).
        memory: the budget for the tile work (bytes, or ``"4G"``, ``"512MB"``, ``"2GiB"``); default: half the
            machine's memory, at most 12 GiB (:func:`pntk.planning.memory_budget`). It does not cover the
            returned kernel. :func:`pntk.plan` shows the plan these choices give.
        dtype: compute in this dtype, e.g. ``torch.float64``; default: the model's.
        device: compute on this device (the model's tensors are copied there, the model is untouched);
            default: the model's.
        params: parameters to differentiate: a dict by name (``torch.func`` style), name patterns
            (``"classifier.*"``, ``"*.lora_*"``) or a predicate ``(name, parameter) -> bool``; default: all
            trainable ones.
        progress: show a progress bar over tiles; default: when there are several tiles and stderr is a
            terminal.
        options: the knobs of planning (:class:`pntk.planning.Options`).
        check_samples: first check, with a few forward passes on two inputs, that each sample's output depends
            on that sample only and is deterministic (:func:`pntk.probe.check_samples`). ``False`` skips it
            and risks a silently wrong kernel: random, or dependent on ``batch_size`` and the engine.
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
    fm, source1, source2 = model_and_inputs(
        model, x1, x2, params=params, dtype=dtype, device=device, check_samples=check_samples, output=output
    )
    X1 = _all_rows(fm, source1, "x1")
    X2 = X1 if x2 is None else _all_rows(fm, source2, "x2")

    def run(engine: Engine | str) -> Tensor | dict[str, Tensor]:
        plan = make_plan(
            fm,
            kind,
            len(X1),
            len(X2),
            symmetric=x2 is None,
            engine=engine,
            batch_size=batch_size,
            memory=memory,
            executor=Executor.KERNEL,
            options=options,
        )
        if by_layer:
            from .by_layer import tiled_parts

            return tiled_parts(plan, fm, X1, X2, progress=progress)
        return _tiled(plan, fm, X1, X2, progress=progress)

    try:
        return run(engine)
    except StructureChangedError as error:
        if parse_enum(Engine, engine, "engine") is not Engine.AUTO:
            raise error.advised("use engine='jacobian', or 'auto', which switches to it by itself") from error
        # The model's structure depends on its inputs: the structured engine's plan does not hold for every
        # block, and the Jacobian engine, which has no plan, computes the kernel exactly.
        warnings.warn(f"engine 'auto': {error}; computing the kernel with the Jacobian engine instead", stacklevel=2)
        return run(Engine.JACOBIAN)


def model_and_inputs(
    model: nn.Module,
    x1: Any,
    x2: Any = None,
    *,
    params: ParamsLike = None,
    dtype: torch.dtype | str | None = None,
    device: torch.device | str | None = None,
    names: tuple[str, str] = ("x1", "x2"),
    check_samples: bool = True,
    output: OutputLike = None,
) -> tuple[FunctionalModel, RowSource, RowSource]:
    """The checked model and the two sources of inputs that every kernel path starts from.

    Reads two samples of ``x1`` to check the model's output (:func:`pntk.kernels.functional_model`) and one of
    ``x2`` to check that the two agree in structure.

    Returns:
        ``(fm, source1, source2)``; ``source2`` is ``source1`` when ``x2`` is ``None``.
    """
    source1 = row_source(x1, names[0])
    source2 = source1 if x2 is None else row_source(x2, names[1])
    where = torch.device(device) if device is not None else device_of(model)
    sample = _on(source1.fetch(slice(0, 2)), where, names[0])
    fm = functional_model(
        model, sample, params=params, dtype=dtype, device=device, check_samples=check_samples, output=output
    )
    sample.check_compatible(source2.fetch(slice(0, 1)))
    return fm, source1, source2


def _tiled(plan: Plan, fm: FunctionalModel, X1: Inputs, X2: Inputs, *, progress: bool | None) -> Tensor:
    """Run ``plan`` in memory: fill the kernel tile by tile, preparing each row block once and mirroring when
    symmetric."""
    O = fm.num_outputs
    shape = (plan.N1, plan.N2, O, O) if plan.kind.is_matrix_valued else (plan.N1, plan.N2)
    out = torch.empty(shape, device=fm.device, dtype=fm.dtype)
    if progress is None:
        progress = len(plan.tiles) > 1 and sys.stderr.isatty()
    tiles = iter_tiles(
        engine_of(plan), fm, plan.tiles, X1.__getitem__, X2.__getitem__, plan.kind, symmetric=plan.symmetric
    )
    desc = f"{plan.kind.value} tiles"
    for t, tile in tqdm(tiles, total=len(plan.tiles), desc=desc, unit="tile", disable=not progress):
        out[t.rows, t.cols] = tile
        if plan.symmetric and not t.on_diagonal:
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


def _all_rows(fm: FunctionalModel, source: RowSource, name: str) -> Inputs:
    """Every sample of ``source``, checked and on the model's device."""
    return fm.prepare_inputs(_on(source.fetch(slice(0, len(source))), fm.device, name), name)


def _on(x: Inputs, device: torch.device, name: str) -> Inputs:
    """``x`` on ``device``: inputs are moved to where the kernel is computed.

    Raises:
        ValueError: a tensor on the meta device, which holds no numbers.
    """
    for t in x.tensors:
        if t.device.type == "meta" and device.type != "meta":
            raise ValueError(f"{name} is on the meta device, which holds shapes but no numbers; pass real inputs")
    return x.map(lambda t: t.to(device))


def device_of(model: nn.Module) -> torch.device:
    """The device of the model's first parameter or buffer (the CPU for a model without tensors, or for what
    is not a model, which :func:`functional_model` then refuses)."""
    if not isinstance(model, nn.Module):
        return torch.device("cpu")
    for t in (*model.parameters(), *model.buffers()):
        return t.device
    return torch.device("cpu")


def entk(
    model: nn.Module,
    x1: InputLike,
    x2: InputLike | None = None,
    *,
    engine: Engine | str = Engine.AUTO,
    batch_size: int | None = None,
    memory: int | str | None = None,
    dtype: torch.dtype | str | None = None,
    device: torch.device | str | None = None,
    params: ParamsLike = None,
    progress: bool | None = None,
    options: Options = DEFAULT_OPTIONS,
    check_samples: bool = True,
    output: OutputLike = None,
    by_layer: bool = False,
) -> Tensor:
    """The empirical NTK ``Θ(x, x') = J(x) J(x')ᵀ``, ``[N1, N2, O, O]``: :func:`kernel` with ``kind="entk"``."""
    return kernel(  # type: ignore[return-value]  # a dict {module path: kernel} with by_layer
        model, x1, x2, kind=Kind.ENTK, engine=engine, batch_size=batch_size, memory=memory, dtype=dtype,
        device=device, params=params, progress=progress, options=options, check_samples=check_samples,
        output=output, by_layer=by_layer,
    )  # fmt: skip


def pntk(
    model: nn.Module,
    x1: InputLike,
    x2: InputLike | None = None,
    *,
    engine: Engine | str = Engine.AUTO,
    batch_size: int | None = None,
    memory: int | str | None = None,
    dtype: torch.dtype | str | None = None,
    device: torch.device | str | None = None,
    params: ParamsLike = None,
    progress: bool | None = None,
    options: Options = DEFAULT_OPTIONS,
    check_samples: bool = True,
    output: OutputLike = None,
    by_layer: bool = False,
) -> Tensor:
    """The pseudo-NTK ``K(x, x') = (1/O) 1ᵀ Θ(x, x') 1``, ``[N1, N2]``: :func:`kernel` with ``kind="pntk"``."""
    return kernel(  # type: ignore[return-value]  # a dict {module path: kernel} with by_layer
        model, x1, x2, kind=Kind.PNTK, engine=engine, batch_size=batch_size, memory=memory, dtype=dtype,
        device=device, params=params, progress=progress, options=options, check_samples=check_samples,
        output=output, by_layer=by_layer,
    )  # fmt: skip


def trace_ntk(
    model: nn.Module,
    x1: InputLike,
    x2: InputLike | None = None,
    *,
    engine: Engine | str = Engine.AUTO,
    batch_size: int | None = None,
    memory: int | str | None = None,
    dtype: torch.dtype | str | None = None,
    device: torch.device | str | None = None,
    params: ParamsLike = None,
    progress: bool | None = None,
    options: Options = DEFAULT_OPTIONS,
    check_samples: bool = True,
    output: OutputLike = None,
    by_layer: bool = False,
) -> Tensor:
    """The trace NTK ``(1/O) tr Θ(x, x')``, ``[N1, N2]``: :func:`kernel` with ``kind="trace"``."""
    return kernel(  # type: ignore[return-value]  # a dict {module path: kernel} with by_layer
        model, x1, x2, kind=Kind.TRACE, engine=engine, batch_size=batch_size, memory=memory, dtype=dtype,
        device=device, params=params, progress=progress, options=options, check_samples=check_samples,
        output=output, by_layer=by_layer,
    )  # fmt: skip
