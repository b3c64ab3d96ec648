"""Which layers the structured engine factors: the plan, found by probing the model on one and two copies of a
sample.

# NOTE: [When a rule may be trusted]
# A rule reads a layer's gradient off its input and output cotangent, so it is exact only if (1) the
# parameter is used nowhere but in that layer's forward, once per call; (2) the first axis of every call's
# input and output is the sample axis; (3) the captured tensors still hold those values after the forward
# pass; (4) autograd records the call, so that its output has a cotangent. Types alone guarantee none of
# these: a parent may read ``self.fc.weight`` itself (tied weights, ``nn.MultiheadAttention``'s
# ``out_proj``), transpose to sequence-first, apply ``ReLU(inplace=True)`` to a layer's output, or call it
# without grad. So before each block
# :func:`plan` runs the model on one and on two copies of a sample under hooks and a ``TorchFunctionMode``
# that counts the functions taking each parameter: a layer is ruled only if its parameters are used exactly
# once per call, its calls see a leading axis of 1 and then 2 with the same trailing shapes (which excludes
# ``[T, B, n]`` and ``[B·T, n]`` layouts for any T > 1), its outputs require grad, and it has no forward hook
# of its own (which could alter its output); the plan clones inputs/outputs later modified in place.
# The decision depends on the model and sample shape only, never on the block, so all blocks of a kernel
# agree on it; parameters of layers that fail a check fall back to per-sample gradients, still exact.
# Modules that hold the same parameters (T5's encoder and decoder ``embed_tokens``, both ``shared.weight``)
# are one layer whose calls are all of theirs, if one rule computes them all.
"""

from __future__ import annotations

import dataclasses
import math
import weakref
from collections import Counter
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn
from torch.overrides import TorchFunctionMode

from ..inputs import Inputs
from ..kinds import Kind
from ..model import FunctionalModel
from .capture import Call, capture_and_output, differentiable, layer_input
from .operations import (
    OPERATION_RULE,
    SCALE_RULE,
    OpCall,
    OperationCalls,
    OpSite,
    layout,
    nearly_equal,
    scale_layout,
)
from .replays import replay
from .rules import (
    LINEAR_RULE,
    TIED_LOOKUP_RULE,
    EmbeddingRule,
    LayerShape,
    LinearRule,
    Rule,
    rule_for,
    scales,
)


@dataclass(frozen=True)
class Layer:
    """A ruled layer, as planned for one model, sample shape and kind.

    Attributes:
        module: the layer; a module called several times is one layer with its calls as extra positions.
        rule: how its gradient factors.
        weight, bias: the names of its differentiated parameters in ``fm.params`` (``None``: held fixed).
        shape: its sizes per sample, all calls together.
        factored: contract the factors ``A``, ``D`` (else materialise the per-sample gradient).
        clone_input, clone_output: keep copies, because the model modifies these tensors in place later.
        also: other modules holding the same parameters, whose calls are this layer's calls too.
        shared: per call (in the order of the forward pass), whether its input is the same for every sample
            (see the note [Calls shared by all samples]); empty if none is.
        heads: linear layers that use this embedding's weight as theirs (a language model's head tied to its
            input embedding), whose gradient entries at the vocabulary rows ``support`` are more positions of
            this layer (:class:`~pntk.kernels.structured.rules.TiedLookupRule`). Each head is also a layer of
            its own, without a weight, so that its calls are captured (and its bias, if differentiated, ruled).
        support: the vocabulary rows where the heads' output cotangents may be nonzero, as the plan found them;
            for a wide dense layer without heads, the rows of its own output that the model's output reads, to
            which its factors and gradients are restricted (``shape.m`` counts them).
    """

    module: Any  # an nn.Module, or an OpSite for a rule by operation
    rule: Rule
    weight: str | None
    bias: str | None
    shape: LayerShape
    factored: bool
    clone_input: bool = False
    clone_output: bool = False
    also: tuple[nn.Module, ...] = ()
    shared: tuple[bool, ...] = ()
    heads: tuple[nn.Module, ...] = ()
    support: tuple[int, ...] = ()

    @property
    def names(self) -> list[str]:
        return [n for n in (self.weight, self.bias) if n is not None]

    @property
    def modules(self) -> tuple[Any, ...]:
        """The module (or operation site) and the others holding its parameters."""
        return (self.module, *self.also)


def ruled_modules(fm: FunctionalModel) -> Iterator[tuple[nn.Module, Rule, str | None, str | None]]:
    """Modules with a rule and a differentiated parameter: ``(module, rule, weight name, bias name)``.

    By type, and without forward hooks (which could alter the output); :func:`plan` checks how the model
    really uses them. Parameters are named by identity, so a module whose weight is tied to another's (held
    under the other's name) is found too.
    """
    names = {id(p): n for n, p in fm.module.named_parameters() if n in fm.params}
    for module in fm.module.modules():
        rule = rule_for(module)
        if rule is None or module._forward_hooks:
            continue
        weight, bias = (names.get(id(getattr(module, p, None))) for p in ("weight", "bias"))
        if weight or bias:
            yield module, rule, weight, bias


def _prefers_factored(rule: Rule, shape: LayerShape, Q: int, weight: str | None) -> bool:
    """Whether a layer takes the factored form: its rule has one, its weight is differentiated, and the FLOP
    count of ``Q`` output pairs favours it."""
    return rule.factorable and weight is not None and factored_cost(rule, shape, Q) < materialised_cost(rule, shape, Q)


def _new_layer(
    module: Any,
    rule: Rule,
    weight: str | None,
    bias: str | None,
    shape: LayerShape,
    calls: list[Call],
    Q: int,
    **fields: Any,
) -> Layer:
    """A layer from its calls on the probe: in the form :func:`_prefers_factored` chooses, copying the tensors
    that the model modifies in place later."""
    return Layer(
        module,
        rule,
        weight,
        bias,
        shape,
        _prefers_factored(rule, shape, Q, weight),
        clone_input=any(c.input_modified for c in calls),
        clone_output=any(c.output_modified for c in calls),
        **fields,
    )


def _tied_groups(
    candidates: list[tuple[nn.Module, Rule, str | None, str | None]],
) -> list[tuple[tuple[nn.Module, ...], Rule, str | None, str | None]]:
    """The candidates grouped by the parameters they hold: several modules with the same parameters are one
    layer if one rule computes them all (else they are left out, and their parameters fall back)."""
    groups: dict[str, list[tuple[nn.Module, Rule, str | None, str | None]]] = {}
    for c in candidates:
        groups.setdefault(c[2] or c[3] or "", []).append(c)
    result = []
    for members in groups.values():
        module, rule, weight, bias = members[0]
        if all(r is rule and (w, b) == (weight, bias) and rule.compatible(module, m) for m, r, w, b in members):
            result.append((tuple(m for m, *_ in members), rule, weight, bias))
    return result


@dataclass(frozen=True)
class _Tie:
    """Embeddings and linear heads that hold the same weight ``W [V, d]`` (see :class:`TiedLookupRule`)."""

    lookups: tuple[nn.Module, ...]
    heads: tuple[nn.Module, ...]
    weight: str
    biases: tuple[str | None, ...]  # each head's bias, if differentiated


def _lookup_ties(candidates: list[tuple[nn.Module, Rule, str | None, str | None]]) -> list[_Tie]:
    """The weights held by embeddings (one rule computes them all) and by plain ``nn.Linear`` heads (each with
    a bias of its own, or none), and by nothing else among ``candidates``: what :func:`_tied_groups` leaves out,
    and the embedding's rule can compute with the heads' rows (see :class:`TiedLookupRule`). Heads that share a
    bias are left out: a bias is one layer's parameter."""
    groups: dict[str, list[tuple[nn.Module, Rule, str | None, str | None]]] = {}
    for c in candidates:
        if c[2] is not None:
            groups.setdefault(c[2], []).append(c)
    ties = []
    for weight, members in groups.items():
        lookups = [m for m, rule, _, bias in members if isinstance(rule, EmbeddingRule) and bias is None]
        heads = [m for m, rule, *_ in members if isinstance(rule, LinearRule) and type(m) is nn.Linear]
        biases = [bias for m, _, _, bias in members if m in heads]
        named = [b for b in biases if b is not None]
        if (
            lookups
            and heads
            and len(lookups) + len(heads) == len(members)
            and len(set(named)) == len(named)
            and all(members[0][1].compatible(lookups[0], m) for m in lookups)
            and all(scales(m) == (1.0, 1.0) for m in lookups + heads)
        ):
            ties.append(_Tie(tuple(lookups), tuple(heads), weight, tuple(biases)))
    return ties


def _tie_layers(
    tie: _Tie,
    one: dict[Any, list[Call] | None],
    two: dict[Any, list[Call] | None],
    uses: _ParameterUses,
    out: Tensor,
    Q: int,
) -> list[Layer] | None:
    """The layers of a tie, as the probes on one and on two copies of a sample found it (``out``: the output
    of the first, with autograd's graph), or ``None`` if it cannot be ruled: the lookup layer (every lookup
    call, then the heads' rows) and one layer per head for its calls and its bias."""
    lookup = tie.lookups[0]
    found = _shape(TIED_LOOKUP_RULE, lookup, one[lookup], two[lookup])
    calls = one[lookup]
    if found is None or calls is None or not calls or any(found[1]):
        return None
    heads = []
    for head in tie.heads:
        head_found, head_calls = _shape(LINEAR_RULE, head, one[head], two[head]), one[head]
        if head_found is None or head_calls is None or any(head_found[1]):
            return None
        heads.append((head, head_found[0], head_calls))
    head_calls = [c for *_, hc in heads for c in hc]
    if (
        tie.weight not in uses.last  # a head acts last, so that a selection of outputs reads its rows
        or uses.counts[tie.weight] != len(calls) + len(head_calls)
        or any(b is not None and uses.counts[b] != len(hc) for b, (*_, hc) in zip(tie.biases, heads))
        or not all(c.output.requires_grad for c in calls + head_calls)
    ):
        return None
    (support,) = _supports(out, [[c.output for c in head_calls]])
    lookup_shape = found[0]
    shape = LayerShape(T=lookup_shape.T + len(support), G=1, n=lookup_shape.n, m=lookup_shape.m)
    lookup_layer = _new_layer(
        lookup,
        TIED_LOOKUP_RULE,
        tie.weight,
        None,
        shape,
        calls,
        Q,
        also=tie.lookups[1:],
        heads=tie.heads,
        support=tuple(support),
    )
    head_layers = [
        _new_layer(head, LINEAR_RULE, None, bias, head_shape, hc, Q)
        for (head, head_shape, hc), bias in zip(heads, tie.biases)
    ]
    return [lookup_layer, *head_layers]


def _supports_on(
    fm: FunctionalModel, params: dict[str, Tensor], x: Inputs, groups: list[tuple[nn.Module, ...]]
) -> list[list[int]]:
    """:func:`_supports` of each group of modules' outputs on a forward pass over ``x`` (``params`` as the
    probes take them)."""
    outputs: list[list[Tensor]] = [[] for _ in groups]
    with ExitStack() as stack, torch.enable_grad():
        for k, modules in enumerate(groups):
            for m in modules:
                stack.callback(m.register_forward_hook(lambda m, args, z, k=k: outputs[k].append(z)).remove)
        out = fm(params, x)
    return _supports(out, outputs)


def _supports(out: Tensor, groups: list[list[Tensor]]) -> list[list[int]]:
    """Per group of layer outputs ``zs``, the rows (last axis) where the gradient of ``Σ_a w_a f_a``, with
    weights ``w`` drawn from a fixed seed, is nonzero in a probe with output ``out``: the rows that some output
    depends on. (Random weights, so that no row is lost to outputs that cancel.)"""
    zs = [z for group in groups for z in group]
    if not zs or not out.requires_grad:
        return [[] for _ in groups]
    weights = torch.randn(out.shape, generator=torch.Generator().manual_seed(0), dtype=out.dtype).to(out.device)
    grads = iter(torch.autograd.grad(out, zs, weights, retain_graph=True, allow_unused=True))
    result = []
    for group in groups:
        m = group[0].shape[-1] if group else 0
        used = torch.zeros(m, dtype=torch.bool, device=out.device)
        for d in (next(grads) for _ in group):
            if d is not None:
                used |= d.reshape(-1, m).ne(0).any(0)
        result.append(used.nonzero().flatten().tolist())
    return result


#: Output widths from which a dense layer's rows are checked for the few that the model's output reads: a
#: language model's head over its vocabulary, of which an output may read a few label words' logits.
SPARSE_FROM = 1024


def _restricted_to_rows(
    fm: FunctionalModel,
    params: dict[str, Tensor],
    x: Inputs,
    layers: list[Layer],
    one: dict[Any, list[Call] | None],
    out: Tensor,
    uses: _ParameterUses,
    Q: int,
) -> list[Layer]:
    """``layers``, with the wide dense layer (``m ≥`` :data:`SPARSE_FROM`) whose parameters the forward pass
    used last, if the model's output reads its output in at most a quarter of its rows, on the probe of one
    sample (output ``out``, with autograd's graph) and on the next sample of ``x``, restricted to those rows
    (:attr:`Layer.support`): its per-sample gradient is zero in every other row of its weight and bias, so the
    kernel needs only those. Only the last layer: after it no parameter acts, so its rows are read by a
    selection of outputs (label words), not switched off by activations of one sample or another."""
    wide = [
        k
        for k, layer in enumerate(layers)
        if isinstance(layer.rule, LinearRule)
        and not isinstance(layer.module, OpSite)
        and not layer.shared
        and layer.shape.G == 1
        and layer.shape.m >= SPARSE_FROM
        and uses.last & set(layer.names)
    ]
    supports = _supports(out, [[c.output for c in one[layers[k].module] or []] for k in wide])
    few = [(k, s) for k, s in zip(wide, supports) if 0 < len(s) <= layers[k].shape.m // 4]
    if few and len(x) > 1:
        others = _supports_on(fm, params, x[1:2], [layers[k].modules for k, _ in few])
        few = [(k, s) for (k, s), other in zip(few, others) if s == other]
    result = list(layers)
    for k, s in few:
        layer = layers[k]
        shape = dataclasses.replace(layer.shape, m=len(s))
        factored = _prefers_factored(layer.rule, shape, Q, layer.weight)
        result[k] = dataclasses.replace(layer, shape=shape, factored=factored, support=tuple(s))
    return result


def gradient_numel(fm: FunctionalModel, layer: Layer, name: str) -> int:
    """The numbers of parameter ``name``'s per-sample gradient (per output row) as the structured engine forms
    it: a layer restricted to the rows of its output that the model's output reads holds those rows only."""
    if layer.support and not layer.heads:
        return layer.shape.m * (layer.shape.n if name == layer.weight else 1)
    return fm.params[name].numel()


#: Multiply-adds that one term of the factored form's elementwise product and sum ``Σ_tu (A A'ᵀ)_tu (D D'ᵀ)_tu``
#: costs: the product is read from and written to memory, where a Gram's multiply-adds stay in registers.
#: (On the reference CPU a small CNN's eNTK ran 2.9× slower when a layer's FLOP counts tied without it.)
PRODUCT_COST = 16


def factored_cost(rule: Rule, shape: LayerShape, Q: int) -> int:
    """Multiply-adds per pair of samples of the factored form: Grams of ``A`` and ``D``, their product (weighted
    by :data:`PRODUCT_COST`).

    ``Q`` is the number of ``(a, b)`` output pairs a kind contracts: 1 (pNTK), ``O`` (trace), ``O²`` (eNTK).
    """
    return shape.G * shape.T**2 * (rule.gram_width(shape) + Q * (shape.m + PRODUCT_COST))


def materialised_cost(rule: Rule, shape: LayerShape, Q: int) -> int:
    """Multiply-adds per pair of samples of the materialised form: inner products of per-sample gradients."""
    return Q * shape.G * shape.m * rule.gradient_width(shape)


def pairs_per_sample(fm: FunctionalModel, kind: Kind) -> int:
    """``Q``: output pairs ``(a, b)`` contracted per pair of samples."""
    return {Kind.PNTK: 1, Kind.TRACE: fm.num_outputs, Kind.ENTK: fm.num_outputs**2}[kind]


#: The last plan of each live model (by ``id`` of its ``fm``): ``(key, result)``. The blocks of one kernel (and
#: ``auto``'s choice before them) share a model, a kind and a sample shape, so they are planned once instead of
#: once per block; an entry goes with its model.
_plans: dict[int, tuple[tuple, tuple[list[Layer], list[str], list[str]]]] = {}


def plan(fm: FunctionalModel, x: Inputs, kind: Kind) -> tuple[list[Layer], list[str]]:
    """The ruled layers for inputs shaped like ``x``, and the differentiated parameters that fall back.

    See the note [When a rule may be trusted]. Layers that the model never calls are left out (their
    parameters have zero gradient), and so are parameters that no function takes on the probe
    (:func:`unused_params`). The last plan of ``fm`` (the same object) is reused for the same kind and trailing
    shapes and dtypes of the inputs.
    """
    layers, fallback, _ = _cached(fm, x, kind)
    return list(layers), list(fallback)


def unused_params(fm: FunctionalModel, x: Inputs, kind: Kind) -> list[str]:
    """The differentiated parameters that no torch function took on the probe, in a model with ruled layers:
    their gradient is zero, so they neither fall back nor have a layer. :func:`~.capture.capture` checks on
    every block that the output still does not depend on them (a model may use a parameter for some samples
    only) and raises :class:`~pntk.errors.StructureChangedError` if it does."""
    return list(_cached(fm, x, kind)[2])


def _cached(fm: FunctionalModel, x: Inputs, kind: Kind) -> tuple[list[Layer], list[str], list[str]]:
    key = (kind, x.keys, tuple((t.shape[1:], t.dtype, t.device) for t in x.tensors))
    cached = _plans.get(id(fm))
    if cached is None or cached[0] != key:
        if cached is None:
            weakref.finalize(fm, _plans.pop, id(fm), None)
        cached = _plans[id(fm)] = (key, _plan(fm, x, kind))
    return cached[1]


def _plan(fm: FunctionalModel, x: Inputs, kind: Kind) -> tuple[list[Layer], list[str], list[str]]:
    by_type = list(ruled_modules(fm))
    candidates, ties = _tied_groups(by_type), _lookup_ties(by_type)
    owner = {m: modules[0] for modules, *_ in candidates for m in modules}
    owner.update({m: tie.lookups[0] for tie in ties for m in tie.lookups})
    owner.update({m: m for tie in ties for m in tie.heads})
    claimed = [n for *_, weight, bias in candidates for n in (weight, bias) if n is not None]
    claimed += [n for tie in ties for n in (tie.weight, *tie.biases) if n is not None]
    # Every other parameter may enter through a linear operation or a scale (rules by operation).
    operands = [n for n in fm.params if n not in set(claimed)]
    params = differentiable(fm, claimed + operands)
    uses = _ParameterUses({id(params[n]): n for n in params if params[n] is not fm.params[n]})
    first = torch.zeros(1, dtype=torch.long, device=fm.device)
    ops1 = OperationCalls({id(params[n]): n for n in operands})
    ops2 = OperationCalls({id(fm.params[n]): n for n in operands})
    one, out_one = _probe(fm, params, x[first], owner, uses, ops1)
    two, _ = _probe(fm, fm.params, x[first.repeat(2)], owner, None, ops2)
    Q = pairs_per_sample(fm, kind)
    layers, ruled = [], set()
    for modules, rule, weight, bias in candidates:
        module = modules[0]
        calls1, calls2 = one[module], two[module]
        names = [n for n in (weight, bias) if n is not None]
        found = _shape(rule, module, calls1, calls2)
        if (
            found is None
            or calls1 is None  # implied by a shape; said again for the type checker
            or any(uses.counts[n] != len(calls1) for n in names)
            or not all(c.output.requires_grad for c in calls1)
        ):
            continue
        ruled.update(names)
        if not calls1:
            continue
        shape, shared = found
        layers.append(
            _new_layer(
                module, rule, weight, bias, shape, calls1, Q, also=modules[1:], shared=shared if any(shared) else ()
            )
        )
    layers = _restricted_to_rows(fm, params, x, layers, one, out_one, uses, Q)
    for tie in ties:
        tied = _tie_layers(tie, one, two, uses, out_one, Q)
        # Rows that differ on the next sample depend on the sample: the tie falls back.
        if (
            tied is not None
            and len(x) > 1
            and _supports_on(fm, params, x[1:2], [tie.heads])[0] != list(tied[0].support)
        ):
            tied = None
        if tied is not None:
            layers += tied
            ruled.update(n for layer in tied for n in layer.names)
    for layer in _unshareable(fm, x[first], [layer for layer in layers if layer.shared], one, out_one):
        layers.remove(layer)
        ruled.difference_update(layer.names)
    sizes = {n: p.shape for n, p in fm.params.items()}
    for site, op_calls, shape in _operation_sites(ops1.calls, ops2.calls, uses, sizes):
        ruled.update(n for n in (site.weight, site.bias) if n is not None)
        rule = SCALE_RULE if site.operation == "mul" else OPERATION_RULE
        layers.append(
            Layer(
                site,
                rule,
                site.weight,
                site.bias,
                shape,
                _prefers_factored(rule, shape, Q, site.weight),
                clone_input=any(c.input._version != c.input_version for c in op_calls),
                clone_output=any(c.output._version != c.output_version for c in op_calls),
            )
        )
    fallback = [n for n in fm.params if n not in ruled]
    # Only a model with ruled layers has a capture pass on every block, which checks that they stay unused.
    unused = [n for n in fallback if uses.counts[n] == 0] if layers else []
    return layers, [n for n in fallback if n not in unused], unused


def _unshareable(
    fm: FunctionalModel, x: Inputs, layers: list[Layer], one: dict[Any, list[Call] | None], out: Tensor
) -> list[Layer]:
    """The layers among ``layers`` (each with calls shared by all samples) whose per-sample cotangents the
    capture cannot find, by the check of the note [Calls shared by all samples] on one sample ``x``, whose
    probe (calls ``one`` and output ``out``, with autograd's graph) gives the plain cotangents."""
    if not layers:
        return []
    expected_out, expected = _plain_cotangents(fm, layers, one, out)
    weights = torch.arange(1, 3, dtype=fm.dtype, device=fm.device)
    two = x[torch.zeros(2, dtype=torch.long, device=fm.device)]
    try:
        got, out = capture_and_output(fm, two, layers, Kind.PNTK, sample_weights=weights)
    except Exception:  # the expansion broke the forward pass: no layer of these can be trusted
        return layers
    if not nearly_equal(expected_out.expand_as(out), out):
        return layers
    failed = []
    for layer, (_, dzs), reference in zip(layers, got, expected):
        dzs = [d for d, shared in zip(dzs, layer.shared) if shared]
        if not all(
            nearly_equal(weights[b] * r.reshape(-1), d[0, b].reshape(-1))
            for d, r in zip(dzs, reference)
            for b in (0, 1)
        ):
            failed.append(layer)
    return failed


def _plain_cotangents(
    fm: FunctionalModel, layers: list[Layer], one: dict[Any, list[Call] | None], out: Tensor
) -> tuple[Tensor, list[list[Tensor]]]:
    """The output ``out`` of a probe on one sample that recorded autograd's graph (:func:`_probe` with uses),
    and per layer the gradient of ``g = O^{-1/2} Σ_a f_a`` with respect to the output of each of its shared
    calls ``one[layer.module]`` there."""
    zs = [c.output for layer in layers for c, shared in zip(one[layer.module] or [], layer.shared) if shared]
    cotangent = torch.full_like(out, 1 / math.sqrt(fm.num_outputs))
    grads = torch.autograd.grad(out, zs, cotangent, allow_unused=True)
    found = iter(torch.zeros_like(z) if g is None else g for z, g in zip(zs, grads))
    return out.detach(), [[next(found) for shared in layer.shared if shared] for layer in layers]


def _operation_sites(
    one: list[OpCall], two: list[OpCall], uses: _ParameterUses, weights: dict[str, torch.Size]
) -> Iterator[tuple[OpSite, list[OpCall], LayerShape]]:
    """The weights used only as the weight of linear operations (or only as scales), once per call, with their
    samples found in every call's input and output (see the note [Where the samples are in an operation's
    operand]). ``weights`` gives the parameters' shapes."""
    by_weight: dict[str, tuple[list[OpCall], list[OpCall]]] = {}
    for k, calls in enumerate((one, two)):
        for c in calls:
            by_weight.setdefault(c.weight, ([], []))[k].append(c)
    for weight, (calls1, calls2) in by_weight.items():
        biases = {c.bias for c in calls1 + calls2}
        scales = {c.operation == "mul" for c in calls1 + calls2}
        if len(calls1) != len(calls2) or len(biases) != 1 or len(scales) != 1:
            continue
        bias = biases.pop()
        if any(n is not None and uses.counts[n] != len(calls1) for n in (weight, bias)):
            continue
        if scales.pop():
            size = weights[weight]
            found = [scale_layout(size, c1.input, c2.input, c1.output, c2.output) for c1, c2 in zip(calls1, calls2)]
            scaled = [lay for lay, c in zip(found, calls1) if lay is not None and c.output.requires_grad]
            if len(scaled) == len(calls1):
                P_w = math.prod(size)
                site = OpSite(weight, None, P_w, P_w, tuple((lay, lay) for lay in scaled), "mul")
                yield site, calls1, LayerShape(T=sum(lay[3] for lay in scaled), G=1, n=P_w, m=P_w)
            continue
        n, m = calls1[0].input.shape[-1], calls1[0].output.shape[-1]
        layouts = [(layout(c1.input, c2.input), layout(c1.output, c2.output)) for c1, c2 in zip(calls1, calls2)]
        if any(
            a is None
            or b is None
            or not c.output.requires_grad
            or c.input.shape[-1] != n
            or c.output.shape[-1] != m
            or c.input.numel() // n != c.output.numel() // m
            for (a, b), c in zip(layouts, calls1)
        ):
            continue
        T = sum(c.input.numel() // n for c in calls1)
        site = OpSite(weight, bias, n, m, tuple(layouts), calls1[0].operation)  # type: ignore[arg-type]
        yield site, calls1, LayerShape(T=T, G=1, n=n, m=m)


def _probe(
    fm: FunctionalModel,
    params: dict[str, Tensor],
    x: Inputs,
    owner: dict[nn.Module, nn.Module],
    uses: _ParameterUses | None = None,
    operations: OperationCalls | None = None,
) -> tuple[dict[nn.Module, list[Call] | None], Tensor]:
    """Every call of the modules in one forward pass on ``x``, in order, under the module that ``owner`` maps
    each to (the first of those holding the same parameters); ``None`` for one called on non-tensors. And the
    model's output.

    With ``uses``, the pass records autograd's graph (on parameters that require grad) and counts uses;
    ``operations`` records the linear operations on candidate weights.
    """
    calls: dict[nn.Module, list[Call] | None] = {m: [] for m in owner.values()}

    def record(module, args, kwargs, output):
        x_in, key = layer_input(args, kwargs), owner[module]
        if calls[key] is None or not (isinstance(x_in, Tensor) and isinstance(output, Tensor)):
            calls[key] = None
            return
        calls[key].append(Call(x_in, output, x_in._version, output._version))

    with ExitStack() as stack:
        for m in owner:
            stack.callback(m.register_forward_hook(record, with_kwargs=True).remove)
        if uses is None:
            stack.enter_context(torch.no_grad())
        else:
            stack.enter_context(torch.enable_grad())
            stack.enter_context(uses)
        if operations is not None:
            stack.enter_context(operations)
        out = fm(params, x)
    return calls, out


def _shape(
    rule: Rule, module: nn.Module, one: list[Call] | None, two: list[Call] | None
) -> tuple[LayerShape, tuple[bool, ...]] | None:
    """The layer's sizes if every call has its samples on the leading axis (1, then 2 of them), or, for a rule
    that allows it, the same input for every sample; and which calls are shared so. Else ``None``."""
    if one is None or two is None or len(one) != len(two):
        return None
    shared = []
    for c1, c2 in zip(one, two):
        if all(
            t1.dim() > 0 and t1.shape[0] == 1 and t2.shape[0] == 2 and t1.shape[1:] == t2.shape[1:]
            for t1, t2 in ((c1.input, c2.input), (c1.output, c2.output))
        ):
            shared.append(False)
        elif (
            rule.shared_inputs
            and c1.input.shape == c2.input.shape
            and c1.output.shape == c2.output.shape
            and torch.equal(c1.input, c2.input)
        ):
            shared.append(True)
        else:
            return None
    skip = [0 if s else 1 for s in shared]  # per-sample shapes: without the sample axis, if there is one
    shape = rule.shape(
        module, [c.input.shape[k:] for c, k in zip(one, skip)], [c.output.shape[k:] for c, k in zip(one, skip)]
    )
    return None if shape is None else (shape, tuple(shared))


class _ParameterUses(TorchFunctionMode):
    """Counts, per parameter, the torch functions that take it as an argument, and keeps the parameters of the
    last function that took any (:attr:`last`).

    Reading an attribute such as ``shape`` is no use; reading a view such as ``weight.T`` is.
    """

    def __init__(self, names: dict[int, str]) -> None:
        super().__init__()
        self.names = names
        self.counts: Counter[str] = Counter()
        self.last: set[str] = set()

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        inside = replay(func, args, kwargs)
        if inside is not None:
            with self:  # count the uses inside, as the rules by operation see them
                return inside()
        result = func(*args, **kwargs)
        if getattr(func, "__name__", None) != "__get__" or isinstance(result, Tensor):
            used = [self.names[id(t)] for t in _tensors((args, kwargs)) if id(t) in self.names]
            self.counts.update(used)
            if used:
                self.last = set(used)
        return result


def _tensors(obj) -> Iterator[Tensor]:
    if isinstance(obj, Tensor):
        yield obj
    elif isinstance(obj, (list, tuple)):
        for o in obj:
            yield from _tensors(o)
    elif isinstance(obj, dict):
        for o in obj.values():
            yield from _tensors(o)
