"""The neural tangent kernel of a network as a linear operator: :func:`operator` and :class:`KernelOperator`.

A product never forms the kernel. With ``J(x) ∈ R^{O×P}`` and ``g = O^{-1/2} Σ_a f_a``:

- pNTK: ``K V = J_g(X1) (J_g(X2)ᵀ V)``;
- eNTK: ``Θ V = J(X1) (J(X2)ᵀ V)`` with ``V`` ``[N2·O, k]``, sample-major (row ``n·O + a``);
- trace NTK: ``T V = (1/O) Σ_a J_a(X1) (J_a(X2)ᵀ V)``.

Each is a pass over ``x2`` to parameter space (the pull) and a pass over ``x1`` back (the push), in chunks
of samples bounded by a memory budget (:func:`pntk.planning.plan_product`), the ``k`` columns of
``V`` sharing each pass.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.func import jvp, vjp, vmap

from ..choices import parse_enum
from ..errors import StructureChangedError
from ..kernels.inputs import InputLike, Inputs
from ..kernels.jacobian import JacobianEngine
from ..kernels.kinds import Engine, Kind
from ..kernels.model import FunctionalModel, functional_model
from ..kernels.outputs import OutputLike
from ..kernels.selection import ParamsLike
from ..kernels.structured import StructuredEngine
from ..kernels.structured.engine import Block
from ..planning import ProductPlan, plan_product, product_engine, working_memory
from . import factors
from .base import LinearOperator


@dataclass
class _Side:
    """The samples on one side of the kernel, cut into chunks, with their cached factors.

    Attributes:
        x: the inputs ``[N, *input]``.
        chunks: the chunks of the samples; under ``torch.distributed`` only this rank's are visited.
        blocks: cached prepared blocks by chunk start (structured products with ``cache``).
    """

    x: Inputs
    chunks: list[slice]
    blocks: dict[int, Block] = field(default_factory=dict)


class KernelOperator(LinearOperator):
    """A neural tangent kernel ``K(x1, x2)`` known through its products; build it with :func:`operator`.

    Shapes: ``(N1, N2)`` for the pNTK and trace NTK; ``(N1·O, N2·O)`` for the eNTK, row ``n·O + a``.
    Accepted operands of ``@`` (torch tensors or NumPy arrays; the result keeps the operand's layout):

    - pNTK and trace: ``[N2]`` → ``[N1]``, ``[N2, k]`` → ``[N1, k]``;
    - eNTK: ``[N2·O]`` → ``[N1·O]``, ``[N2·O, k]`` → ``[N1·O, k]``, ``[N2, O]`` → ``[N1, O]``,
      ``[N2, O, k]`` → ``[N1, O, k]``.

    Cost of a product with ``k`` columns, ``engine="structured"`` (what ``"auto"`` picks when ruled layers hold
    most parameters): for every factored layer two matmuls of ``N·T·k·n·m`` multiply-adds (``N`` samples,
    ``T`` positions, an ``n → m`` layer), times ``O`` for the trace NTK, whose pull needs ``O``
    parameter-space vectors per column; other parameters cost ``N·R·P_part·k`` from their per-sample
    gradients. The factors of every chunk are cached when they fit half of ``memory``: then a product runs
    no network pass at all; otherwise each product prepares every chunk again (one forward and one backward
    pass, ``O`` vectorised backward passes for the eNTK and trace). ``engine="vp"``: per chunk and column a
    ``vjp`` (forward and backward pass) on ``x2`` and a ``jvp`` (forward-mode pass) on ``x1``, for any model.

    Under ``torch.distributed`` (an initialised process group of several ranks, every rank holding the same
    inputs), each rank passes over its share of the chunks and the parameter-space block and the result are
    summed with ``all_reduce``: every rank gets the same product.

    When ``"auto"`` chose the structured engine and a chunk of the model does not follow the plan found on its
    probe samples (:class:`~pntk.errors.StructureChangedError`: the model's structure depends on its inputs),
    the operator warns and computes this and every later product, column and diagonal with vector products
    (under ``torch.distributed`` it raises instead, advising ``engine="vp"``).
    """

    def __init__(
        self,
        fm: FunctionalModel,
        rows: _Side,
        cols: _Side,
        kind: Kind,
        engine: Engine,
        plan: ProductPlan,
        *,
        symmetric: bool,
        progress: bool | None,
        automatic: bool = False,
    ) -> None:
        O = fm.num_outputs
        scale = O if kind is Kind.ENTK else 1
        super().__init__((len(rows.x) * scale, len(cols.x) * scale), fm.dtype, fm.device, progress)
        self.fm, self.kind, self.engine, self.plan = fm, kind, engine, plan
        self.rows, self.cols, self.symmetric = rows, cols, symmetric
        #: The engine was chosen by ``"auto"`` (and is chosen again for another kind).
        self.automatic = automatic
        #: Rows of the Jacobian per sample: ``1`` (``∇g``) for the pNTK, ``O`` otherwise.
        self.R = 1 if kind is Kind.PNTK else O

    @property
    def num_outputs(self) -> int:
        """``O``, the network's number of outputs."""
        return self.fm.num_outputs

    def with_kind(self, kind: Kind | str) -> KernelOperator:
        """The operator of another kind on the same model, inputs, engine and memory budget, with its own
        chunking and cache of factors (e.g. the pNTK beside an eNTK, for a Kronecker preconditioner).

        Example:
            >>> import torch, pntk
            >>> net = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Tanh(), torch.nn.Linear(4, 2)).eval()
            >>> pntk.operator(net, torch.randn(5, 3), kind="entk").with_kind("pntk").shape
            (5, 5)
        """
        kind = parse_enum(Kind, kind, "kind")
        n = len(self.rows.x) + (0 if self.symmetric else len(self.cols.x))
        R = self.num_outputs if kind is Kind.TRACE else 1
        plan = plan_product(self.fm, kind, n, memory=self.plan.memory, rows_per_sample=R)
        rows = _Side(self.rows.x, _cut(len(self.rows.x), plan.chunk))
        cols = rows if self.symmetric else _Side(self.cols.x, _cut(len(self.cols.x), plan.chunk))
        engine = product_engine(self.fm, kind, plan, self.rows.x) if self.automatic else self.engine
        return KernelOperator(
            self.fm,
            rows,
            cols,
            kind,
            engine,
            plan,
            symmetric=self.symmetric,
            progress=self.progress,
            automatic=self.automatic,
        )

    # --- shapes ---------------------------------------------------------------------------------------------

    def _as_block(self, V: Tensor) -> tuple[Tensor, tuple[int, ...]]:
        if self.kind is not Kind.ENTK:
            return super()._as_block(V)
        O, N1, N2 = self.num_outputs, self.shape[0] // self.num_outputs, self.shape[1] // self.num_outputs
        if V.dim() == 2 and V.shape == (N2, O):
            return V.reshape(N2 * O, 1), (N1, O)
        if V.dim() == 3 and V.shape[:2] == (N2, O):
            return V.reshape(N2 * O, -1), (N1, O, V.shape[2])
        if V.dim() in (1, 2) and V.shape[0] == N2 * O:
            return super()._as_block(V)
        raise ValueError(
            f"cannot multiply the eNTK operator of shape {self.shape} (N2 = {N2}, O = {O}) with an operand of "
            f"shape {list(V.shape)}; pass [{N2 * O}], [{N2 * O}, k], [{N2}, {O}] or [{N2}, {O}, k]"
        )

    # --- products -------------------------------------------------------------------------------------------

    def _matmat(self, V: Tensor) -> Tensor:
        return self._exactly(lambda: self._products(V), stacklevel=4)  # the caller of @

    def _exactly(self, compute: Callable[[], Tensor], stacklevel: int = 3) -> Tensor:
        """``compute()``; when ``"auto"`` chose the structured engine and a chunk does not follow its plan, the
        operator leaves that engine for vector products, which hold for any model, and computes again.

        Raises:
            StructureChangedError: the structured engine was asked for by name, or the operator runs under
                ``torch.distributed`` (whose ranks must run the same passes); the message says to use ``"vp"``.
        """
        try:
            return compute()
        except StructureChangedError as error:
            if not self.automatic:
                raise error.advised("use engine='vp', or 'auto', which switches to it by itself") from error
            if _rank()[1] > 1:
                # Other ranks may be past this pass already: a switch here would mismatch their collectives.
                raise error.advised(
                    "use engine='vp' (under torch.distributed the ranks cannot switch engines within a product)"
                ) from error
            warnings.warn(
                f"engine 'auto': {error}; computing the operator's products with vector products instead",
                stacklevel=stacklevel,
            )
            # Columns and the diagonal, too, come from vector products and per-sample gradients from now on.
            self.engine, self.automatic = Engine.VP, False
            self.rows.blocks.clear()
            self.cols.blocks.clear()
            return compute()

    def _products(self, V: Tensor) -> Tensor:
        # Columns pass in groups of plan.columns; every group shares each chunk's factors, prepared once per
        # product when they are not cached.
        k, step = V.shape[1], max(1, self.plan.columns)
        starts = range(0, k, step)
        W = [self._weights(V[:, s : s + step]) for s in starts]
        out = self._push(self._pull(W), [w.shape[-1] for w in W])
        return torch.cat([self._collapse(o, min(step, k - s)) for o, s in zip(out, starts)], 1)

    def _weights(self, V: Tensor) -> Tensor:
        """The columns ``V [n_cols, k]`` as cotangent weights ``W [N2, R', k']`` of the pull.

        The trace NTK needs one parameter-space vector per output and column: ``W[n, a, a·k + j] = V[n, j]``.
        """
        k, O = V.shape[1], self.num_outputs
        W = V.reshape(len(self.cols.x), -1 if self.kind is Kind.ENTK else 1, k)
        if self.kind is Kind.TRACE:
            Wt = W.new_zeros(W.shape[0], O, O, k)
            Wt.diagonal(dim1=1, dim2=2).copy_(W[:, 0].unsqueeze(-1).expand(-1, -1, O))
            W = Wt.reshape(W.shape[0], O, O * k)
        return W

    def _collapse(self, out: Tensor, k: int) -> Tensor:
        """The push's ``[N1, R, k']`` as the product's ``[n_rows, k]``."""
        if self.kind is Kind.TRACE:
            O = self.num_outputs
            out = out.reshape(-1, O, O, k).diagonal(dim1=1, dim2=2).sum(-1) / O
        return out.reshape(self.shape[0], k)

    def _pull(self, W: list[Tensor]) -> list[list[Tensor]]:
        """``Jᵀ W`` for every group of columns, summed over this rank's chunks of ``x2``, then over the ranks."""
        U: list[list[Tensor] | None] = [None] * len(W)
        for rows in self._chunks_of(self.cols, "pull"):
            block = None if self.engine is Engine.VP else self._block(self.cols, rows)
            for g, Wg in enumerate(W):
                if block is None:
                    part = self._vp_pull(self.cols.x[rows], Wg[rows])
                else:
                    part = factors.pull(block, Wg[rows])
                Ug = U[g]
                U[g] = part if Ug is None else [u.add_(p) for u, p in zip(Ug, part)]
        # A rank without chunks contributes zeros of the right shapes to the sum.
        return [_all_reduce(u if u is not None else self._empty_pull(Wg)) for u, Wg in zip(U, W)]

    def _push(self, U: list[list[Tensor]], widths: list[int]) -> list[Tensor]:
        """``J U`` on this rank's chunks of ``x1`` for every group, the other rows summed in from the other ranks."""
        out = [torch.zeros(len(self.rows.x), self.R, w, dtype=self.dtype, device=self.device) for w in widths]
        for rows in self._chunks_of(self.rows, "push"):
            block = None if self.engine is Engine.VP else self._block(self.rows, rows)
            for g, (Ug, w) in enumerate(zip(U, widths)):
                if block is None:
                    out[g][rows] = self._vp_push(self.rows.x[rows], Ug, w)
                else:
                    out[g][rows] = factors.push(block, Ug, w)
        return _all_reduce(out)

    def _empty_pull(self, W: Tensor) -> list[Tensor]:
        """Zero parts shaped like a pull's (from one sample with zero weights), for a rank that holds no chunk."""
        rows = slice(0, 1)
        if self.engine is Engine.VP:
            return self._vp_pull(self.cols.x[rows], torch.zeros_like(W[rows]))
        return factors.pull(self._prepare(self.cols.x[rows]), torch.zeros_like(W[rows]))

    def _chunks_of(self, side: _Side, what: str) -> Iterator[slice]:
        """This rank's chunks of ``side``: every ``world``-th one, from its rank on."""
        rank, world = _rank()
        return self._loop(side.chunks[rank::world], f"{what} chunks")

    def _engine(self) -> StructuredEngine:
        """The structured engine with its working memory bounded by this operator's budget."""
        return StructuredEngine(working_memory(self.plan.memory))

    def _prepare(self, x: Inputs) -> Block:
        return self._engine().prepare(self.fm, x, Kind.PNTK if self.kind is Kind.PNTK else Kind.ENTK)

    def _block(self, side: _Side, rows: slice) -> Block:
        """The prepared factors of a chunk: from the cache, or computed (and cached when the plan says so)."""
        block = side.blocks.get(rows.start)
        if block is None:
            block = self._prepare(side.x[rows])
            if self.plan.cache:
                side.blocks[rows.start] = block
        return block

    # --- columns ---------------------------------------------------------------------------------------------

    def columns(self, index: Tensor) -> Tensor:
        """The columns ``K[:, index]`` (for the eNTK, matrix columns ``m·O + b``), ``[n_rows, len(index)]``.

        With the structured engine these are kernel tiles between every chunk of ``x1`` and the samples of the
        columns, contracted from the factors (the Grams ``A A_Sᵀ ⊙ D D_Sᵀ`` of a dense layer): ``N·s·(n + m)``
        multiply-adds per layer for ``s`` samples instead of the ``N·s·n·m`` of ``s`` products, also when
        ``"auto"`` chose vector products for the products; with ``engine="vp"`` asked for, products with unit
        vectors.
        """
        return self._exactly(lambda: self._columns(index))

    def _columns(self, index: Tensor) -> Tensor:
        if self.engine is Engine.VP and not self.automatic:
            return super().columns(index)
        index = torch.as_tensor(index, device=self.device)
        O = self.num_outputs
        samples, inverse = torch.unique(index // O if self.kind is Kind.ENTK else index, return_inverse=True)
        prepared = Kind.PNTK if self.kind is Kind.PNTK else Kind.ENTK
        S = self._prepare(self.cols.x[samples])
        r = O if self.kind is Kind.ENTK else 1
        out = torch.zeros(len(self.rows.x), r, len(samples) * r, dtype=self.dtype, device=self.device)
        engine = self._engine()
        for rows in self._chunks_of(self.rows, "column chunks"):
            tile = engine.contract(self.fm, self._block(self.rows, rows), S, prepared, same=False).detach()
            if self.kind is Kind.TRACE:
                tile = tile.diagonal(dim1=2, dim2=3).sum(-1) / O
            if self.kind is Kind.ENTK:
                tile = tile.permute(0, 2, 1, 3).reshape(tile.shape[0], O, -1)
            out[rows] = tile.reshape(tile.shape[0], r, -1)
        out = _all_reduce([out])[0].reshape(self.shape[0], -1)
        return out[:, inverse * O + index % O] if self.kind is Kind.ENTK else out[:, inverse]

    # --- NTK-vector products ------------------------------------------------------------------------------

    def _cotangents(self, W: Tensor) -> Tensor:
        """Output cotangents ``[k, B, O]`` for the columns ``W [B, R, k]``."""
        O = self.num_outputs
        if self.R == 1:
            return (W[:, 0].T / math.sqrt(O)).unsqueeze(-1).expand(-1, -1, O)
        return W.permute(2, 0, 1)

    def _vp_pull(self, x: Inputs, W: Tensor) -> list[Tensor]:
        fm = self.fm
        pullback = vjp(lambda p: fm(p, x), fm.params)[1]
        tangents = vmap(pullback)(self._cotangents(W).contiguous())[0]
        # contiguous: a parameter the chunk does not use gets expanded zeros, which later chunks are added into
        return [t.reshape(W.shape[-1], -1).contiguous() for t in tangents.values()]

    def _vp_push(self, x: Inputs, U: list[Tensor], k: int) -> Tensor:
        fm = self.fm
        names = list(fm.params)

        def column(*u: Tensor) -> Tensor:
            tangent = {n: t.reshape(fm.params[n].shape) for n, t in zip(names, u)}
            return jvp(lambda p: fm(p, x), (fm.params,), (tangent,))[1]  # [B, O]

        out = vmap(column)(*U)  # [k, B, O]
        if self.R == 1:
            return (out.sum(-1) / math.sqrt(self.num_outputs)).T.unsqueeze(1)
        return out.permute(1, 2, 0)

    # --- transpose and diagonal ---------------------------------------------------------------------------

    def _transpose(self) -> LinearOperator:
        if self.symmetric:
            return self
        return KernelOperator(
            self.fm,
            self.cols,
            self.rows,
            self.kind,
            self.engine,
            self.plan,
            symmetric=False,
            progress=self.progress,
            automatic=self.automatic,
        )

    def _rmatmat(self, U: Tensor) -> Tensor:
        return self._transpose()._matmat(U)

    def diagonal(self) -> Tensor:
        """The exact diagonal, from per-sample gradient norms: ``K(x_n, x_n)`` for ``x_n`` in ``x1`` (pNTK,
        trace), ``Θ(x_n, x_n)_{aa}`` at row ``n·O + a`` (eNTK). Defined for ``x2 = None`` only.

        Cost: one pass over the samples (none with cached factors); the structured engine's factors (also when
        ``"auto"`` chose vector products), or per-sample gradients with ``engine="vp"`` asked for, as many
        samples at a time as their ``R·P`` numbers fit half of the memory budget.

        Raises:
            ValueError: the operator is rectangular (``x2`` given).
        """
        if not self.symmetric:
            raise ValueError("the diagonal of K(x1, x2) is defined only for x2 = None; build the operator on x1 alone")
        return self._exactly(self._diagonal)

    def _diagonal(self) -> Tensor:
        out = torch.zeros(len(self.rows.x), self.R, dtype=self.dtype, device=self.device)
        prepared = Kind.PNTK if self.kind is Kind.PNTK else Kind.ENTK
        P = sum(p.numel() for p in self.fm.params.values())
        # Per-sample gradients and their squares, 2·R·P numbers a sample, in half of the budget.
        step = max(1, self.plan.memory // (4 * self.R * P * self.dtype.itemsize))
        for rows in self._chunks_of(self.rows, "diagonal"):
            if self.engine is Engine.VP and not self.automatic:
                for s in range(rows.start, rows.stop, step):
                    part = slice(s, min(s + step, rows.stop))
                    J = JacobianEngine().prepare(self.fm, self.rows.x[part], prepared)
                    out[part] = sum(j.square().sum(-1) for j in J)
            else:
                out[rows] = factors.squared_norms(self._block(self.rows, rows))
        out = _all_reduce([out])[0]
        if self.kind is Kind.TRACE:
            return out.mean(1)
        return out.reshape(-1)


def _rank() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def _all_reduce(parts: list[Tensor]) -> list[Tensor]:
    """The sum of ``parts`` over the ranks (in place), as one flat ``all_reduce``."""
    if _rank()[1] == 1:
        return parts
    flat = torch.cat([p.reshape(-1) for p in parts])
    dist.all_reduce(flat)
    out, start = [], 0
    for p in parts:
        out.append(flat[start : start + p.numel()].view_as(p))
        start += p.numel()
    return out


def operator(
    model: nn.Module,
    x1: InputLike,
    x2: InputLike | None = None,
    *,
    kind: Kind | str = Kind.PNTK,
    engine: Engine | str = Engine.AUTO,
    params: ParamsLike = None,
    dtype: torch.dtype | None = None,
    batch_size: int | None = None,
    memory: int | str | None = None,
    progress: bool | None = None,
    output: OutputLike = None,
) -> KernelOperator:
    """A neural tangent kernel of ``model`` between ``x1`` and ``x2`` as a matrix-free linear operator.

    ``op @ V`` never forms the kernel: see :class:`KernelOperator` for the accepted shapes and what a product
    costs. ``op.T``, ``op.diagonal()`` (exact, for ``x2 = None``), ``op.to_scipy()`` (a SciPy
    ``LinearOperator``) and ``op.to_dense()`` (for small tests) come with it.

    Args:
        model: an ``nn.Module`` mapping ``B`` samples to ``[B, O]``, in eval mode if it has BatchNorm or
            Dropout.
        x1: ``[N1, *input]``, or a tuple/dict of such tensors.
        x2: ``[N2, *input]`` likewise; ``None`` for ``x1`` (a symmetric operator, whose factors are shared).
        kind: ``"pntk"`` (default), ``"entk"`` or ``"trace"`` (or a :class:`Kind`).
        engine: ``"auto"``, ``"structured"`` (cached per-layer factors) or ``"vp"`` (``torch.func`` vector
            products); ``"auto"`` picks structured when layers with a rule hold at least half of the parameters,
            except for an eNTK whose factors do not fit half of ``memory`` (see
            :func:`pntk.planning.product_engine`).
        params: parameters to differentiate: a dict by name, name patterns or a predicate, as for
            :func:`pntk.kernel`; default: all trainable ones.
        dtype: compute in this dtype; default: the model's.
        batch_size: samples per chunk of a pass; default: from ``memory``.
        memory: the budget of a product's working memory and cached factors, bytes or ``"2GB"``; default
            :func:`pntk.planning.memory_budget`'s (half the machine's memory, at most 12 GiB).
        progress: progress bars over the chunks of each pass; default: when stderr is a terminal.
        output: what of the model's output is ``f(x)``, as for :func:`pntk.kernel`.

    Returns:
        The operator, of shape ``(N1, N2)`` (pNTK, trace) or ``(N1·O, N2·O)`` (eNTK), on the model's device,
        in ``dtype``.

    Raises:
        ValueError: as :func:`pntk.kernel` does for bad models and inputs; an engine other than ``"auto"``,
            ``"structured"`` or ``"vp"``.

    Example:
        >>> import torch, pntk
        >>> net = torch.nn.Sequential(torch.nn.Linear(3, 8), torch.nn.Tanh(), torch.nn.Linear(8, 2)).eval()
        >>> x = torch.randn(5, 3, dtype=torch.float64)
        >>> op = pntk.operator(net, x, kind="pntk", dtype=torch.float64)
        >>> v = torch.randn(5, dtype=torch.float64)
        >>> torch.allclose(op @ v, pntk.pntk(net, x, dtype=torch.float64) @ v)
        True
        >>> pntk.operator(net, x, kind="entk", dtype=torch.float64).shape
        (10, 10)
    """
    kind = parse_enum(Kind, kind, "kind")
    engine = parse_enum(Engine, engine, "engine")
    X1 = Inputs.from_user(x1, "x1")
    X2 = X1 if x2 is None else Inputs.from_user(x2, "x2")
    X1.check_compatible(X2)
    fm = functional_model(model, X1[:2], params=params, dtype=dtype, output=output)
    X1 = fm.prepare_inputs(X1, "x1")
    X2 = X1 if x2 is None else fm.prepare_inputs(X2, "x2")
    if engine not in (Engine.AUTO, Engine.STRUCTURED, Engine.VP):
        raise ValueError(f"an operator computes its products with engine 'structured' or 'vp', not {engine.value!r}")
    R = fm.num_outputs if kind is Kind.TRACE else 1
    plan = plan_product(
        fm, kind, len(X1) + (0 if x2 is None else len(X2)), memory=memory, batch_size=batch_size, rows_per_sample=R
    )
    automatic = engine is Engine.AUTO
    if automatic:
        engine = product_engine(fm, kind, plan, X1)
    rows = _Side(X1, _cut(len(X1), plan.chunk))
    cols = rows if x2 is None else _Side(X2, _cut(len(X2), plan.chunk))
    return KernelOperator(
        fm, rows, cols, kind, engine, plan, symmetric=x2 is None, progress=progress, automatic=automatic
    )


def _cut(n: int, chunk: int) -> list[slice]:
    return [slice(s, min(s + chunk, n)) for s in range(0, n, chunk)]
