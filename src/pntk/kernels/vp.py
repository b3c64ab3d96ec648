"""The vector-product engine: NTK-vector products, never holding a Jacobian.

A column of a tile is ``Θ(X1, X2) e = J(X1) (J(X2)ᵀ e)``: a ``vjp`` through the network on ``X2`` turns
the cotangent ``e`` into a parameter-space vector, and a ``jvp`` on ``X1`` along that vector gives the
column. The ``vjp`` closure (one forward pass on ``X2``) is shared by all columns; columns are vectorised in
chunks that fit the contraction's working memory (:func:`column_chunk`).
"""

from __future__ import annotations

import math
import weakref
from collections.abc import Iterator
from dataclasses import dataclass

import torch
import torch.utils._pytree as pytree
from torch import Tensor
from torch.func import jvp, vjp, vmap
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils._python_dispatch import TorchDispatchMode

from .engine import outputs_per_sample
from .fallback import TRACE_ERRORS, attempt, cause, leaves
from .inputs import Inputs
from .kinds import Kind
from .model import FunctionalModel
from .structured import WorkingMemory


class VPEngine:
    """``vjp`` on the column block, ``jvp`` on the row block.

    Memory: the activations that the ``vjp`` saves for the column block, and per column of a vectorised chunk
    its parameter-space vector and the activations of its passes over both blocks; the chunk holds at most
    ``memory.contract_bytes`` (:func:`column_chunk`).
    """

    name = "vp"

    def __init__(self, memory: WorkingMemory | None = None) -> None:
        self.memory = memory or WorkingMemory()

    def prepare(self, fm: FunctionalModel, x: Inputs, kind: Kind) -> Inputs:
        return x

    def contract(self, fm: FunctionalModel, a: Inputs, b: Inputs, kind: Kind, *, same: bool) -> Tensor:
        """The tile from its columns ``J(a) (J(b)ᵀ e)``; where forward-mode AD is missing for an operation of
        the model (fused attention kernels) or ``vmap`` cannot trace it, from reverse-over-reverse products,
        with a warning."""
        B1, B2, O = len(a), len(b), fm.num_outputs
        columns = Columns(B2, outputs_per_sample(fm, kind), O, kind is Kind.PNTK, fm.dtype, fm.device)
        cols = attempt(
            self.name,
            fm,
            lambda: _forward_over_reverse(fm, a, b, columns, column_chunk(fm, B1 + B2, self.memory)),
            # Reverse-over-reverse also keeps the graph of the first backward pass, about twice the activations.
            lambda: _reverse_over_reverse(fm, a, b, columns, column_chunk(fm, 2 * (B1 + B2), self.memory)),
            "computing Jacobian-vector products by reverse-over-reverse (double VJP) instead",
        )  # [B2·rows, B1] for the pNTK, [B2·rows, B1, O] otherwise
        if kind is Kind.PNTK:
            return cols.T
        theta = cols.reshape(B2, O, B1, O).permute(2, 0, 3, 1)  # [B1, B2, O, O]
        if kind is Kind.ENTK:
            return theta
        return theta.diagonal(dim1=2, dim2=3).sum(-1) / O

    def block_bytes(self, fm: FunctionalModel, n: int, kind: Kind) -> int:
        """A block is only its inputs, but a tile of ``n × n`` holds the activations its ``vjp`` saves on one
        block and at least one column: a parameter-space vector and the activations of its passes over both
        blocks. Counted half per block (a tile holds two): ``2·n·a + P/2`` numbers' worth, with ``a`` the
        activation bytes of a sample."""
        return 2 * n * activation_bytes(fm) + fm.num_params * fm.dtype.itemsize // 2


def column_chunk(fm: FunctionalModel, samples: int, memory: WorkingMemory) -> int:
    """Columns vectorised at once so that their parameter-space vectors and the activations of their passes
    over ``samples`` samples (both blocks of a tile) fit ``memory.contract_bytes``; at least one."""
    per_column = fm.num_params * fm.dtype.itemsize + samples * activation_bytes(fm)
    return max(1, memory.contract_bytes // per_column)


@dataclass(frozen=True)
class Columns:
    """The unit cotangents of a tile's columns, one per (sample ``j`` of the column block, output direction):
    ``e_j ⊗ 1/√O`` for the pNTK, whose column is then read as the summed output ``1ᵀ J(a) t / √O``;
    ``e_j ⊗ e_b`` otherwise."""

    samples: int
    rows: int
    outputs: int
    summed: bool
    dtype: torch.dtype
    device: torch.device

    def chunks(self, size: int) -> Iterator[Tensor]:
        """The cotangents ``[c, B2, O]`` of ``size`` columns at a time, made as they are used."""
        n = self.samples * self.rows
        for start in range(0, n, size):
            stop = min(start + size, n)
            unit = torch.zeros(stop - start, n, dtype=self.dtype, device=self.device)
            unit[torch.arange(stop - start), torch.arange(start, stop)] = 1
            unit = unit.view(stop - start, self.samples, self.rows)
            if self.summed:
                unit = unit.expand(-1, -1, self.outputs) / math.sqrt(self.outputs)
            yield unit

    def read(self, out: Tensor) -> Tensor:
        """Columns' values from ``J(a) t`` (``[..., B1, O]``): summed over outputs for the pNTK."""
        return out.sum(-1) / math.sqrt(self.outputs) if self.summed else out


def _forward_over_reverse(fm: FunctionalModel, a: Inputs, b: Inputs, columns: Columns, size: int) -> Tensor:
    """``J(a) J(b)ᵀ c`` for each cotangent ``c`` by a ``vjp`` then a ``jvp``, vectorised ``size`` at a time."""
    pullback = vjp(lambda p: fm(p, b), fm.params)[1]

    def column(cotangent: Tensor) -> Tensor:
        (tangent,) = pullback(cotangent)
        return columns.read(jvp(lambda p: fm(p, a), (fm.params,), (tangent,))[1])

    return torch.cat([vmap(column)(c) for c in columns.chunks(size)])


#: The activation bytes of one sample of each live model (by ``id`` of its ``fm``).
_activations: dict[int, int] = {}


def activation_bytes(fm: FunctionalModel) -> int:
    """The floating-point tensors one sample's forward pass creates, in bytes: every intermediate result of
    every operation (measured once per model on the samples it was checked on, ``fm.sample``, and divided
    among them). It bounds what a pass keeps for its backward pass, and what forward-mode AD holds beside the
    values as their tangents. A model that cannot be run under the count (or was checked on no samples) is
    taken at a per-sample gradient's size, ``P`` numbers."""
    cached = _activations.get(id(fm))
    if cached is None:
        cached = _count(fm, fm.sample) if fm.sample is not None else None
        if cached is None:
            cached = fm.num_params * fm.dtype.itemsize
        weakref.finalize(fm, _activations.pop, id(fm), None)
        _activations[id(fm)] = cached
    return cached


def _count(fm: FunctionalModel, sample: Inputs) -> int | None:
    """:func:`activation_bytes` measured on ``sample``; ``None`` where an operation refuses the count."""
    counter = _CreatedBytes()
    try:
        # With gradients, as the vector products run: without them some modules take fused paths that create
        # few tensors (nn.TransformerEncoderLayer in eval mode: a tenth of the bytes).
        with torch.enable_grad(), counter:
            fm(leaves(fm.params), sample)
    except (RuntimeError, NotImplementedError, TypeError):
        return None
    return -(-counter.bytes // len(sample))


class _CreatedBytes(TorchDispatchMode):
    """Adds up the bytes of the floating-point tensors that the operations under it return."""

    def __init__(self) -> None:
        super().__init__()
        self.bytes = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        # Views and in-place results share their input's storage and hold no new memory.
        inputs = {a.untyped_storage().data_ptr() for a in pytree.tree_leaves((args, kwargs)) if isinstance(a, Tensor)}
        for t in pytree.tree_leaves(out):
            if isinstance(t, Tensor) and t.is_floating_point() and t.untyped_storage().data_ptr() not in inputs:
                self.bytes += t.numel() * t.element_size()
        return out


def _reverse_over_reverse(fm: FunctionalModel, a: Inputs, b: Inputs, columns: Columns, size: int) -> Tensor:
    """``J(a) J(b)ᵀ c`` for each cotangent ``c`` with reverse mode only.

    ``h(u) = J(a)ᵀ u`` is linear in ``u``, so its vector-Jacobian product with a tangent ``t`` is ``J(a) t``:
    one backward pass of ``f(b)`` gives ``t = J(b)ᵀ c``, one backward pass through the graph of ``h`` gives
    the column. Both are vectorised over ``size`` cotangents where ``vmap`` can, one at a time otherwise. Scaled
    dot-product attention runs on its math backend, the one with a double backward.

    Raises:
        ValueError: an operation of the model has neither forward-mode AD nor a double backward.
    """
    params = leaves(fm.params)
    names = list(params)
    # Fused attention kernels have no double backward; the math backend computes the same attention from
    # matmuls and a softmax, which have.
    with torch.enable_grad(), sdpa_kernel(SDPBackend.MATH):
        out_b = fm(params, b)
        out_a = fm(params, a)
        u = torch.zeros_like(out_a, requires_grad=True)
        try:
            h = torch.autograd.grad(out_a, list(params.values()), u, create_graph=True, allow_unused=True)
        except RuntimeError as error:
            raise ValueError(
                f"engine 'vp' cannot differentiate this model twice ({cause(error)}); use engine='jacobian' or "
                "engine='structured', which need only one reverse pass"
            ) from error
        used = [k for k, g in enumerate(h) if g is not None and g.requires_grad]
        values = []
        for c in columns.chunks(size):
            if not used or not out_b.requires_grad:  # no parameter reaches both outputs: zero columns
                values.append(columns.read(out_a.new_zeros(len(c), *out_a.shape)))
                continue
            t = _batched_grad(out_b, [params[names[k]] for k in used], c)
            try:
                values.append(columns.read(_batched_grad([h[k] for k in used], [u], t)[0]))
            except RuntimeError as error:
                raise ValueError(
                    f"engine 'vp' found neither forward-mode AD nor a double backward for an operation of this "
                    f"model ({cause(error)}); use engine='jacobian' or engine='structured'"
                ) from error
    return torch.cat(values).detach()


def _batched_grad(outputs, inputs: list[Tensor], cotangents) -> list[Tensor]:
    """``∂⟨outputs, c⟩/∂inputs`` for each of a batch of cotangents ``c`` (leading axis), vectorised by
    autograd's ``is_grads_batched`` where ``vmap`` can, one at a time otherwise. Unused inputs get zeros."""
    outputs = outputs if isinstance(outputs, list) else [outputs]
    cotangents = cotangents if isinstance(cotangents, list) else [cotangents]
    try:
        grads = torch.autograd.grad(
            outputs, inputs, cotangents, retain_graph=True, is_grads_batched=True, allow_unused=True
        )
    except TRACE_ERRORS:
        rows = [
            torch.autograd.grad(outputs, inputs, [c[i] for c in cotangents], retain_graph=True, allow_unused=True)
            for i in range(len(cotangents[0]))
        ]
        grads = tuple(
            None if rows[0][k] is None else torch.stack([r[k] for r in rows])  # type: ignore[misc]
            for k in range(len(inputs))
        )
    n = len(cotangents[0])
    return [x.new_zeros(n, *x.shape) if g is None else g for g, x in zip(grads, inputs)]
