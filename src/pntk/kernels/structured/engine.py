"""The structured engine: per-layer factors, contracted layer by layer.

For a layer ``z_t = ws·W a_t + bs·b`` at ``T`` positions per sample, the inputs ``A ∈ R^{T×n}`` and the
output cotangents ``D ∈ R^{T×m}`` of ``g`` give ``∂g/∂W = ws·Dᵀ A`` and

.. math::

    ⟨∂g(x)/∂θ_{layer}, ∂g(x')/∂θ_{layer}⟩ = \\sum_{t,u} (ws² A A'^⊤ + bs²)_{tu} (D D'^⊤)_{tu},

``B1·B2·T²·(n + m)`` multiply-adds for a tile instead of ``B1·B2·n·m``: the kernel of a dense layer is the
elementwise product of the input Gram and the cotangent Gram. For the eNTK the cotangents carry an output
index, ``Θ_ab(x, x') += Σ_tu (ws² A A'ᵀ + bs²)_tu (D_a D'_bᵀ)_tu``; the trace keeps ``a = b``, which is one
inner product over ``(a, m)`` together. Per layer a FLOP count chooses between this factored form and the
materialised per-sample gradient ``Dᵀ A`` (a convolution on a large image has ``T²`` too large to factor).
Parameters without a rule fall back to the Jacobian engine's per-sample gradients. A materialised gradient is
written chunk by chunk into its place: one matmul per sample over unfolded patches, or, for a convolution on a
large image, one weight-gradient pass of a convolution whose groups are the samples (no patches copied).

Cost of a block of ``B`` samples: two tiny probe passes, one forward pass, one backward pass to the layer
outputs (``O`` of them, vectorised, for the eNTK and trace), and the per-sample gradients of materialised
layers and fallback parameters. A tile then costs the Grams above plus the matmuls of materialised gradients;
a diagonal tile computes only its chunks on and above the diagonal.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from ...errors import StructureChangedError
from ..engine import outputs_per_sample
from ..inputs import Inputs
from ..jacobian import JacobianEngine
from ..kinds import Kind
from ..model import FunctionalModel
from ..selection import group_of
from .capture import capture, channels_last, layer_captures
from .plan import (
    Layer,
    factored_cost,
    gradient_numel,
    materialised_cost,
    pairs_per_sample,
    plan,
    ruled_modules,
    unused_params,
)

#: Tensors the size of a ruled layer's output that a pass holds per layer (its output, the activation after
#: it, and what autograd saves), besides the ``R`` cotangents.
ACTIVATIONS_PER_OUTPUT = 3

#: Materialised gradients narrower than this are contracted together, as one matrix (wider ones are not
#: copied into it: each is contracted as it is).
NARROW = 4096


@dataclass(frozen=True)
class WorkingMemory:
    """The structured engine's working memory beyond its blocks and tiles; a plan bounds each by its budget
    (:func:`pntk.planning.make_plan`).

    Attributes:
        unfold_bytes: the unfolded inputs of a convolution while its per-sample gradients are formed: little
            enough to stay in cache between the copy that unfolds them and the matmul that reads them (a
            quarter faster at 16 MiB than at 256 MiB on a 2-core CPU).
        capture_bytes: the activations and cotangents of one forward and backward pass while a block is
            prepared: the block's factors and gradients are bounded by its tile edge, but the activations of a
            deep network on thousands of images would not be (WRN-16-2: about 4 MB a CIFAR image).
        contract_bytes: the Grams of one layer and one pair of row and column chunks during a contraction.
        symmetric_chunk: samples per chunk of a diagonal tile, which computes only the chunks on and above its
            diagonal (and is cut in two at least): smaller chunks skip more of the lower half, larger ones
            multiply faster.
    """

    unfold_bytes: int = 16 * 2**20
    capture_bytes: int = 512 * 2**20
    contract_bytes: int = 256 * 2**20
    symmetric_chunk: int = 512

    @property
    def total(self) -> int:
        """The most of it held at once: a pass's activations, unfolded inputs and a contraction's Grams."""
        return self.unfold_bytes + self.capture_bytes + self.contract_bytes


@dataclass(frozen=True)
class Factors:
    """A factored layer of one block: ``∂g/∂W_g = ws Σ_t D_{g,t}ᵀ A_{g,t}`` per sample.

    Attributes:
        layer: the planned layer.
        A: inputs ``[G, B, T, n]`` (token ids ``[1, B, T]`` for an embedding).
        D: cotangents ``[G, B, r, T, m]``: ``r = O`` rows for the eNTK, else one row (of width ``O·m`` for
            the trace, whose ``Σ_a D_a D'_aᵀ`` is then a single inner product).
    """

    layer: Layer
    A: Tensor
    D: Tensor


@dataclass(frozen=True)
class Block:
    """A prepared block of ``B`` samples.

    Attributes:
        factors: the factored layers.
        J: the materialised per-sample gradients of all other differentiated parameters, in parts
            ``[B, r, P_part]`` (for the trace ``P_part`` holds the ``O`` gradients of each parameter).
        columns: for each part of ``J``, its parameters as ``(name, start, stop)`` columns of the part's
            ``[B, R, P_part]`` layout (``R = O`` for the trace, whose part is that layout flattened).
    """

    B: int
    factors: list[Factors]
    J: list[Tensor]
    columns: list[list[tuple[str, int, int]]] = dataclasses.field(default_factory=list)


class StructuredEngine:
    """Per-layer factors (inputs and output cotangents) of ruled layers; per-sample gradients elsewhere."""

    name = "structured"

    def __init__(self, memory: WorkingMemory | None = None) -> None:
        self.memory = memory or WorkingMemory()

    def prepare(self, fm: FunctionalModel, x: Inputs, kind: Kind) -> Block:
        B = len(x)
        layers, fallback = plan(fm, x, kind)
        unused = unused_params(fm, x, kind)
        x = channels_last(fm, x, layers, kind) or x
        rest = None
        if fallback:
            rest = dataclasses.replace(
                fm,
                params={n: fm.params[n] for n in fallback},
                constants={**fm.constants, **{n: p for n, p in fm.params.items() if n not in fallback}},
            )
        # The passes run over chunks of the block, so that their activations stay within capture_bytes.
        step = _capture_samples(layers, outputs_per_sample(fm, kind), fm.dtype.itemsize, self.memory.capture_bytes)
        full = _fill_rows(
            B, step, lambda rows, into: self._prepare_rows(fm, x[rows], kind, layers, unused, rest, into, rows)
        )
        factored = [layer for layer in layers if layer.factored]
        factors = [Factors(layer, full[2 * i], full[2 * i + 1]) for i, layer in enumerate(factored)]
        grads = full[2 * len(factored) :]
        # One part per materialised parameter, in the order _prepare_rows computes them.
        names = [n for layer in layers if not layer.factored for n in layer.names] + list(fallback)
        narrow = [(g, n) for g, n in zip(grads, names) if g.shape[-1] < NARROW]
        wide = [(g, n) for g, n in zip(grads, names) if g.shape[-1] >= NARROW]
        J = [g for g, _ in wide] + ([torch.cat([g for g, _ in narrow], -1)] if narrow else [])
        columns = [[(n, 0, g.shape[-1])] for g, n in wide]
        if narrow:
            stops = torch.tensor([g.shape[-1] for g, _ in narrow]).cumsum(0).tolist()
            columns.append([(n, stop - g.shape[-1], stop) for (g, n), stop in zip(narrow, stops)])
        if kind is Kind.TRACE:
            J = [g.reshape(B, 1, -1) for g in J]
        return Block(B, factors, J, columns)

    def _prepare_rows(
        self,
        fm: FunctionalModel,
        x: Inputs,
        kind: Kind,
        layers: list[Layer],
        unused: list[str],
        rest: FunctionalModel | None,
        into: list[Tensor] | None,
        rows: slice,
    ) -> list[tuple[Tensor, int]]:
        """One forward and backward pass over the samples ``x``: ``A`` and ``D`` of each factored layer, then
        the gradient parts of the materialised layers and of the fallback parameters ``rest``, each with its
        sample axis (the parameters ``unused`` have none: the pass checks that the output does not depend on
        them). With ``into`` (the tensors of a whole block), each is also written into its ``rows``
        there, a materialised gradient directly."""
        B, R = len(x), outputs_per_sample(fm, kind)
        parts: list[tuple[Tensor, int]] = []
        materialised = []
        for layer, xs, dzs in layer_captures(layers, capture(fm, x, layers, kind, unused)):
            D = layer.rule.cotangents(layer.module, dzs)  # [G, B, R, T, m]
            if not layer.factored:
                materialised.append((layer, xs, D))
                continue
            if kind is Kind.TRACE:
                G, _, _, T, m = D.shape
                D = D.transpose(2, 3).reshape(G, B, 1, T, R * m)
            parts += [(layer.rule.inputs(layer.module, xs), 1), (D.contiguous(), 1)]
        first = len(parts)
        for layer, xs, D in materialised:
            k = len(parts)
            out = None if into is None else [g[rows] for g in into[k : k + len(layer.names)]]
            parts += [(g, 0) for g in _materialise(layer, xs, D, self.memory.unfold_bytes, out)]
        in_place = range(first, len(parts))
        if rest is not None:
            parts += [(g, 0) for g in JacobianEngine().prepare(rest, x, kind)]
        if into is not None:
            for k, (p, axis) in enumerate(parts):
                if k not in in_place:
                    into[k].narrow(axis, rows.start, B).copy_(p)
        return parts

    def contract(self, fm: FunctionalModel, a: Block, b: Block, kind: Kind, *, same: bool) -> Tensor:
        return self._contract(fm, a, b, kind, same=same, by_layer=False)[""]

    def contract_parts(self, fm: FunctionalModel, a: Block, b: Block, kind: Kind, *, same: bool) -> dict[str, Tensor]:
        """The tile's part from each parameter group (module path), which sum to :meth:`contract`'s tile: the
        same Grams and products as the whole tile, accumulated per group."""
        return self._contract(fm, a, b, kind, same=same, by_layer=True)

    def _contract(
        self, fm: FunctionalModel, a: Block, b: Block, kind: Kind, *, same: bool, by_layer: bool
    ) -> dict[str, Tensor]:
        if [f.layer for f in a.factors] != [f.layer for f in b.factors] or [g.shape[-1] for g in a.J] != [
            g.shape[-1] for g in b.J
        ]:
            raise StructureChangedError(
                "the structured engine planned the two blocks of a tile differently, so the model's structure "
                "depends on its inputs (data-dependent control flow)"
            )
        B1, B2, O = a.B, b.B, fm.num_outputs
        r = O if kind is Kind.ENTK else 1
        R = O if kind is Kind.TRACE else r
        flat = O if kind is Kind.TRACE else 1  # a trace part is [B, 1, O·P_part], the others [B, r, P_part]

        def gram(Ja: Tensor, Jb: Tensor, start: int, stop: int) -> tuple[Tensor, Tensor]:
            """Rows ``[c, r·w]`` of one parameter's columns (all of a part when it is one parameter)."""
            if start == 0 and stop * flat == Ja.shape[-1]:
                return Ja.reshape(Ja.shape[0] * r, -1), Jb.reshape(Jb.shape[0] * r, -1)
            cut = [J.reshape(J.shape[0], R, -1)[:, :, start:stop].reshape(J.shape[0] * r, -1) for J in (Ja, Jb)]
            return cut[0], cut[1]

        # Each term adds one layer or parameter part to the matrix of its group.
        factor_groups = [group_of(f.layer.weight or f.layer.bias or "") if by_layer else "" for f in a.factors]
        part_columns = [cols if by_layer else [("", 0, Ja.shape[-1] // flat)] for cols, Ja in zip(a.columns, a.J)]
        groups = dict.fromkeys(
            factor_groups + [group_of(n) if by_layer else n for cols in part_columns for n, *_ in cols]
        )
        Ms = {g: torch.zeros(B1 * r, B2 * r, dtype=fm.dtype, device=fm.device) for g in groups}
        c = _chunk(a, r, fm.dtype, same, self.memory)
        for i0 in range(0, B1, c):
            rows = slice(i0, min(i0 + c, B1))
            for j0 in range(i0 if same else 0, B2, c):
                cols = slice(j0, min(j0 + c, B2))
                tiles = {g: M[rows.start * r : rows.stop * r, cols.start * r : cols.stop * r] for g, M in Ms.items()}
                for g, fa, fb in zip(factor_groups, a.factors, b.factors):
                    _accumulate(tiles[g], fa, fb, rows, cols)
                for columns, Ja, Jb in zip(part_columns, a.J, b.J):
                    for name, start, stop in columns:
                        Ga, Gb = gram(Ja[rows], Jb[cols], start, stop)
                        tiles[group_of(name) if by_layer else name].addmm_(Ga, Gb.T)
                if same and j0 > i0:
                    for g, M in Ms.items():
                        M[cols.start * r : cols.stop * r, rows.start * r : rows.stop * r] = tiles[g].T
        if kind is Kind.ENTK:
            return {g: M.view(B1, O, B2, O).permute(0, 2, 1, 3) for g, M in Ms.items()}
        return {g: M / O if kind is Kind.TRACE else M for g, M in Ms.items()}

    def block_bytes(self, fm: FunctionalModel, n: int, kind: Kind) -> int:
        """Factors of ``n`` samples.

        With the inputs the model was checked on (``fm.sample``), as the plan lays them out: a factored
        layer holds ``G·T·(n + R·m)`` numbers per sample, a materialised one and a fallback parameter ``R``
        per-sample gradients. Without them, from the model alone: a dense layer or embedding is assumed to see
        one position per sample (``T = 1``; a sequence of ``T`` tokens holds up to ``T`` times more, or its
        materialised gradient); convolutions, whose ``T`` is the output size, are counted at their
        materialised size ``R·P_layer``, which bounds the factors that the FLOP count would choose instead;
        elementwise parameters (normalisation layers, PReLU) and fallback parameters hold ``R`` per-sample
        gradients. Activations, held while a block is prepared, are not counted.
        """
        R, Q = outputs_per_sample(fm, kind), pairs_per_sample(fm, kind)
        if fm.sample is not None:
            layers, fallback = plan(fm, fm.sample, kind)
            numbers = sum(
                layer.shape.G * layer.shape.T * (layer.rule.gram_width(layer.shape) + R * layer.shape.m)
                if layer.factored
                else R * sum(gradient_numel(fm, layer, p) for p in layer.names)
                for layer in layers
            )
            numbers += R * sum(fm.params[p].numel() for p in fallback)
            return n * numbers * fm.dtype.itemsize
        numbers, ruled = 0, set()
        for module, rule, weight, bias in ruled_modules(fm):
            names = [p for p in (weight, bias) if p is not None]
            ruled.update(names)
            shape = rule.nominal_shape(module)
            if (
                shape is not None
                and rule.factorable
                and weight is not None
                and factored_cost(rule, shape, Q) < materialised_cost(rule, shape, Q)
            ):
                numbers += shape.G * shape.T * (rule.gram_width(shape) + R * shape.m)
            else:
                numbers += R * sum(fm.params[p].numel() for p in names)
        numbers += R * sum(p.numel() for name, p in fm.params.items() if name not in ruled)
        return n * numbers * fm.dtype.itemsize

    def ruled_fraction(self, fm: FunctionalModel, kind: Kind = Kind.PNTK) -> float:
        """The fraction of ``P`` under rules: as :func:`plan` finds it on the inputs the model was checked on
        (layers and operations), or by module type when there are none."""
        if fm.sample is not None:
            layers, _ = plan(fm, fm.sample, kind)
            ruled = {n for layer in layers for n in layer.names}
        else:
            ruled = {p for _, _, weight, bias in ruled_modules(fm) for p in (weight, bias) if p is not None}
        return sum(fm.params[p].numel() for p in ruled) / max(1, fm.num_params)

    def costs(self, fm: FunctionalModel, kind: Kind) -> Costs | None:
        """What this engine's plan on the inputs the model was checked on predicts, or ``None`` without them."""
        if fm.sample is None:
            return None
        layers, fallback = plan(fm, fm.sample, kind)
        Q = pairs_per_sample(fm, kind)
        pair = sum(
            factored_cost(layer.rule, layer.shape, Q)
            if layer.factored
            else Q * sum(gradient_numel(fm, layer, n) for n in layer.names)
            for layer in layers
        )
        fallback_numel = sum(fm.params[n].numel() for n in fallback)
        sample = sum(
            s.T * s.G * s.m * (layer.rule.gram_width(s) if layer.rule.factorable else 1)
            for layer in layers
            for s in [layer.shape]
        )
        return Costs(pair=pair + Q * fallback_numel, sample=sample, fallback=fallback_numel)


@dataclass(frozen=True)
class Costs:
    """The structured engine's multiply-adds on a model, as its plan predicts them.

    Attributes:
        pair: per pair of samples, the contraction: each ruled layer's factored form, or ``Q`` times its
            parameters when materialised, and ``Q`` times each fallback parameter (``Q`` output pairs: 1 for the
            pNTK, ``O`` for the trace, ``O²`` for the eNTK), where the Jacobian engine costs ``Q·P``.
        sample: per sample, a forward pass through the ruled layers (``Σ T·G·m·n``; a lookup for an embedding,
            a product for an elementwise parameter); preparing a block costs a few such passes.
        fallback: the differentiated numbers without a rule; the Jacobian engine's per-sample gradients give
            theirs, at the cost of its passes.
    """

    pair: int
    sample: int
    fallback: int


def _materialise(
    layer: Layer, xs: list[Tensor], D: Tensor, unfold_bytes: int, out: list[Tensor] | None = None
) -> list[Tensor]:
    """The per-sample gradient of a layer in parts ``[B, R, P_part]`` (written into ``out`` if given), over
    chunks of samples whose ``A`` fits ``unfold_bytes``, each chunk written into its rows of the parts."""
    rule, module = layer.rule, layer.module
    if layer.weight is None:
        return rule.gradient(module, None, D, weight=False, bias=True, out=out)
    B = D.shape[1]
    per_sample = layer.shape.G * layer.shape.T * layer.shape.n * D.element_size()
    step = max(1, unfold_bytes // max(1, per_sample))

    def chunk(rows: slice, into: list[Tensor] | None) -> list[tuple[Tensor, int]]:
        parts = rule.materialise(
            module,
            [x[rows] for x in xs],
            D[:, rows],
            bias=layer.bias is not None,
            out=None if into is None else [p[rows] for p in into],
        )
        return [(p, 0) for p in parts]

    return _fill_rows(B, step, chunk, out)


def _fill_rows(
    B: int,
    step: int,
    compute: Callable[[slice, list[Tensor] | None], list[tuple[Tensor, int]]],
    into: list[Tensor] | None = None,
) -> list[Tensor]:
    """Results for ``B`` samples, computed ``step`` samples at a time (written into ``into`` if given).

    ``compute(rows, into)`` gives the results for the samples ``rows``, each with its sample axis, and with
    ``into`` (tensors for all ``B`` samples) also writes them into their rows there. Without ``into``, the
    first chunk's results are copied into new tensors for the whole block unless they already cover it.
    """
    full = into
    for s in range(0, B, step):
        rows = slice(s, min(s + step, B))
        parts = compute(rows, full)
        if full is None:
            if rows.stop == B:
                return [p for p, _ in parts]
            full = [p.new_empty(p.shape[:axis] + (B,) + p.shape[axis + 1 :]) for p, axis in parts]
            for f, (p, axis) in zip(full, parts):
                f.narrow(axis, 0, rows.stop).copy_(p)
    assert full is not None, "a block has at least one sample"
    return full


def _capture_samples(layers: list[Layer], R: int, itemsize: int, capture_bytes: int) -> int:
    """Samples per forward and backward pass of :meth:`StructuredEngine.prepare`: their activations fit
    ``capture_bytes``, estimated as :data:`ACTIVATIONS_PER_OUTPUT` tensors and ``R`` cotangents the size of
    each ruled layer's output (the only sizes known before the pass)."""
    outputs = sum(layer.shape.G * layer.shape.T * layer.shape.m for layer in layers)
    return max(1, capture_bytes // max(1, outputs * (ACTIVATIONS_PER_OUTPUT + R) * itemsize))


def _chunk(a: Block, r: int, dtype: torch.dtype, same: bool, memory: WorkingMemory) -> int:
    """Samples per row/column chunk: the Grams of the largest layer fit ``memory.contract_bytes``; a diagonal
    tile is cut further so that only its upper chunks are computed."""
    itemsize = dtype.itemsize
    # Per pair of samples: the Grams of A and D and their product.
    per_pair = max((f.D.shape[0] * f.D.shape[3] ** 2 * (1 + 2 * r * r) for f in a.factors), default=1)
    c = max(1, math.isqrt(memory.contract_bytes // (itemsize * per_pair)))
    return min(c, memory.symmetric_chunk, -(-a.B // 2)) if same else c


def _accumulate(tile: Tensor, fa: Factors, fb: Factors, rows: slice, cols: slice) -> None:
    """``tile += Σ_{g,t,u} (ws² A A'ᵀ + bs²)_{tu} ⊙ (D D'ᵀ)_{tu}`` for one factored layer.

    Args:
        tile: ``[c1·r, c2·r]``, row ``i·r + a``, column ``j·r + b``.
    """
    layer = fa.layer
    D1, D2 = fa.D[:, rows], fb.D[:, cols]
    G, c1, r, T, m = D1.shape
    c2 = D2.shape[1]
    GA = layer.rule.gram(layer.module, fa.A[:, rows], fb.A[:, cols], layer.bias is not None, D1.dtype)
    GD = torch.bmm(D1.reshape(G, c1 * r * T, m), D2.reshape(G, c2 * r * T, m).mT)
    if G == 1 and T == 1:
        tile.view(c1, r, c2, r).addcmul_(GD.view(c1, r, c2, r), GA.view(c1, 1, c2, 1))
    else:
        product = GD.view(G, c1, r, T, c2, r, T) * GA.view(G, c1, 1, T, c2, 1, T)
        tile += product.sum((0, 3, 6)).view(c1 * r, c2 * r)
