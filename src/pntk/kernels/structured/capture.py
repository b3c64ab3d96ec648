"""The pass over a block that captures every planned layer's inputs and output cotangents.

# NOTE: [Calls shared by all samples]
# An embedding may take the same ids for every sample (BERT's ``position_ids`` buffer ``[1, T]``, GPT-2's
# ``arange(T)[None]``, T5's relative-position buckets ``[L, L]``): the probes see the same input, and the
# same output, on one sample and on two. Its output is broadcast against the samples later, so autograd
# gives only the sum over samples of its cotangents. The capture makes it per sample: the output itself if
# its leading axis is 1, else the first view of it (``permute``, ``unsqueeze``, indexing...) with a leading
# axis of 1, is expanded to ``B`` samples; the cotangent of the expansion is each sample's, and a batched
# backward pass through those views brings it back to the embedding's output. That is exact only if the
# expansion is used as the model used the unexpanded tensor (broadcast against the samples) and nothing else
# uses the unexpanded output, so the plan checks it on two copies of a sample whose outputs get cotangents
# weighted 1 and 2: the outputs must be unchanged and each copy's cotangent must be its weight times the
# plain gradient on one sample. A call that fails the check falls back.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn
from torch.overrides import TorchFunctionMode

from ...errors import StructureChangedError
from ..engine import outputs_per_sample
from ..inputs import Inputs
from ..kinds import Kind
from ..model import FunctionalModel
from .operations import (
    OpCall,
    OperationCalls,
    OpSite,
    samples_first,
)

if TYPE_CHECKING:
    from .plan import Layer


@dataclass
class Call:
    """One call of a layer seen by a hook: its input and output, and their version counters then."""

    input: Tensor
    output: Tensor
    input_version: int
    output_version: int
    source: tuple[Tensor, Tensor] | None = None  # a shared call's output z and its view y whose expansion is output

    @property
    def input_modified(self) -> bool:
        return self.input._version != self.input_version

    @property
    def output_modified(self) -> bool:
        return self.output._version != self.output_version


def layer_input(args: tuple, kwargs: dict):
    return args[0] if args else next(iter(kwargs.values()), None)


def differentiable(fm: FunctionalModel, names: list[str]) -> dict[str, Tensor]:
    """``fm.params`` with the named ones as fresh leaves that require grad, so that autograd records their use."""
    return {**fm.params, **{n: fm.params[n].detach().requires_grad_() for n in names}}


#: Memory format per number of axes of an image batch: oneDNN's CPU convolutions are faster on channels-last
#: tensors (the benchmark ConvNet's pNTK took 12% less time).
_CHANNELS_LAST = {4: torch.channels_last, 5: torch.channels_last_3d}


def channels_last(fm: FunctionalModel, x: Inputs, layers: list[Layer], kind: Kind) -> Inputs | None:
    """``x`` in channels-last memory format, if the passes should run on it; else ``None``.

    Only for the pNTK on a CPU, for a model with ruled 2-d or 3-d convolutions, when every input is a
    floating-point batch of images (4 or 5 axes), and only if the model gives the same outputs on a probe of
    two samples: a forward that ``.view``s an activation raises on channels-last tensors, and one that reads
    strides could compute something else. (The eNTK and trace batch their ``O`` backward passes with vmap,
    where some backward functions, GroupNorm's among them, refuse channels-last tensors.) The values are the
    same either way, up to rounding.
    """
    if (
        kind is not Kind.PNTK
        or fm.device.type != "cpu"
        or not any(isinstance(layer.module, (nn.Conv2d, nn.Conv3d)) for layer in layers)
    ):
        return None
    if not all(t.is_floating_point() and t.dim() in _CHANNELS_LAST for t in x.tensors):
        return None
    converted = x.map(lambda t: t.contiguous(memory_format=_CHANNELS_LAST[t.dim()]))
    probe = torch.arange(min(2, len(x)), device=fm.device)
    with torch.no_grad():
        expected = fm(fm.params, x[probe])
        try:
            got = fm(fm.params, converted[probe])
        except RuntimeError:
            return None
    scale = expected.abs().max().clamp(min=torch.finfo(expected.dtype).tiny)
    return converted if ((got - expected).abs().max() <= 1e-3 * scale).item() else None


def capture(
    fm: FunctionalModel, x: Inputs, layers: list[Layer], kind: Kind, unused: Sequence[str] = ()
) -> list[tuple[list[Tensor], list[Tensor]]]:
    """One forward pass over the block and the cotangents of every ruled layer's outputs.

    The cotangents are those of ``g = O^{-1/2} Σ_a f_a`` for the pNTK (one backward pass with cotangent
    ``1/√O`` on every output) and of each ``f_a`` otherwise (``O`` backward passes sharing the forward one,
    vectorised by ``is_grads_batched``). Samples do not interact, so the batched backward gives each sample
    its own cotangents. Gradients are taken with respect to the layer outputs only: the weight gradients that
    a plain backward pass would also form are never computed. A call shared by all samples has its output
    expanded to the samples (see the note [Calls shared by all samples]). The same backward pass checks that
    the output does not depend on the parameters ``unused`` (:func:`~.plan.unused_params`).

    Returns:
        Per layer and call, what its rule kept of the input ``[B, ...]``, and the output's cotangents
        ``[R, B, ...]`` (``R = 1`` for the pNTK, ``O`` otherwise).

    Raises:
        StructureChangedError: the block does not follow the plan: its layers are called otherwise, or its
            output depends on a parameter of ``unused``.
    """
    return capture_and_output(fm, x, layers, kind, unused=unused)[0]


def capture_and_output(
    fm: FunctionalModel,
    x: Inputs,
    layers: list[Layer],
    kind: Kind,
    sample_weights: Tensor | None = None,
    unused: Sequence[str] = (),
) -> tuple[list[tuple[list[Tensor], list[Tensor]]], Tensor]:
    """:func:`capture`, and the model's output on ``x``; with ``sample_weights`` ``[B]`` (pNTK only), sample
    ``b``'s outputs get the cotangent ``w_b/√O`` instead of ``1/√O``."""
    B, O = len(x), fm.num_outputs
    params = differentiable(fm, [n for layer in layers for n in layer.names] + list(unused))
    calls: dict[Any, list[Call]] = {layer.module: [] for layer in layers}  # modules and OpSites
    by_module = {m: layer for layer in layers for m in layer.modules}
    shared_outputs = _SharedOutputs(B)

    def record(module, args, kwargs, output):
        layer = by_module[module]
        layer_calls = calls[layer.module]
        with torch.no_grad():
            kept = layer.rule.keep(module, layer_input(args, kwargs).detach())
        if layer.clone_input:
            kept = kept.clone()
        shared = len(layer_calls) < len(layer.shared) and layer.shared[len(layer_calls)]
        if shared:  # every sample holds the shared input
            kept = kept.reshape(1, -1).expand(B, -1)
        call = Call(kept, output, kept._version, output._version)
        layer_calls.append(call)
        if shared:
            if output.dim() > 0 and output.shape[0] == 1:
                return shared_outputs.expand(call, output, output)
            shared_outputs.follow(call, output)
            return None
        # Downstream in-place operations then modify the copy, not the captured output.
        return output.clone() if layer.clone_output else None

    sites = {layer.module.weight: (layer, layer.module) for layer in layers if isinstance(layer.module, OpSite)}

    def record_operation(call: OpCall) -> Tensor | None:
        layer, site = sites[call.weight]
        k = len(calls[site])
        if k >= len(site.layouts) or call.bias != site.bias:
            raise StructureChangedError(
                f"the {site} was called differently on a block of {B} samples than on the probe of one and two samples"
            )
        with torch.no_grad():
            kept = samples_first(call.input.detach(), site.layouts[k][0], B)
        if layer.clone_input:
            kept = kept.clone()
        calls[site].append(Call(kept, call.output, kept._version, call.output._version))
        return call.output.clone() if layer.clone_output else None

    with ExitStack() as stack, torch.enable_grad():
        for layer in layers:
            if not isinstance(layer.module, OpSite):
                for m in layer.modules:
                    stack.callback(m.register_forward_hook(record, with_kwargs=True).remove)
        if any(layer.shared for layer in layers):
            stack.enter_context(shared_outputs)
        if sites:
            names = [n for layer, _ in sites.values() for n in layer.names]
            stack.enter_context(OperationCalls({id(params[n]): n for n in names}, record_operation))
        out = fm(params, x)
        for module, module_calls in calls.items():
            operation = isinstance(module, OpSite)
            if not operation and not module_calls:
                raise StructureChangedError(
                    f"{type(module).__name__} was not called on a block of {B} samples, though it was on the probe "
                    "(control flow that depends on the inputs)"
                )
            if operation and len(module_calls) != len(module.layouts):
                raise StructureChangedError(
                    f"the {module} was called {len(module_calls)} times on a block of {B} samples but "
                    f"{len(module.layouts)} times on the probe"
                )
            shared = by_module[module].shared if not operation else ()
            for k, c in enumerate(module_calls):
                if (
                    c.input.shape[0] != B
                    or (c.output.shape[0] != B and not operation)
                    or (k < len(shared) and shared[k] and c.source is None)
                    or c.input_modified
                    or c.output_modified
                ):
                    raise StructureChangedError(
                        f"{type(module).__name__} behaved differently on a block of {B} samples than on the "
                        "probe of one and two samples (layout or in-place modification)"
                    )
        all_calls = [c for layer in layers for c in calls[layer.module]]
        zs = [c.output for c in all_calls]
        R = outputs_per_sample(fm, kind)
        dzs: list[Tensor | None] = [None] * len(zs)
        # The views between a shared output and its expansion are differentiated again below.
        retain = any(c.source is not None and c.source[0] is not c.source[1] for c in all_calls)
        # Parameters unused on the probe are inputs of the same backward pass: a gradient path to one of them,
        # which autograd finds at no cost when there is none, means this block uses it.
        leaves = [params[n] for n in unused]
        if (zs or leaves) and out.requires_grad:
            if kind is Kind.PNTK:
                weights = out.new_ones(B) if sample_weights is None else sample_weights
                cotangent = (weights / math.sqrt(O)).reshape(B, *[1] * (out.dim() - 1)).expand_as(out)
                grads = torch.autograd.grad(out, zs + leaves, cotangent, allow_unused=True, retain_graph=retain)
                dzs = [None if d is None else d.unsqueeze(0) for d in grads[: len(zs)]]
            else:
                basis = torch.eye(O, dtype=out.dtype, device=out.device).unsqueeze(1).expand(O, B, O)
                grads = torch.autograd.grad(
                    out, zs + leaves, basis, is_grads_batched=True, allow_unused=True, retain_graph=retain
                )
                dzs = list(grads[: len(zs)])
            used = [n for n, g in zip(unused, grads[len(zs) :]) if g is not None]
            if used:
                raise StructureChangedError(
                    f"the output depends on the parameter {used[0]!r} on a block of {B} samples, but not on the "
                    "probe samples, where the model did not use it"
                )
        # The hooks stay on during the backward pass to see layers that it recomputes: those would run
        # outside ``fm``'s tensors, with the module's own parameters.
        if sum(map(len, calls.values())) != len(zs):
            raise RuntimeError(
                "the model recomputes layers in its backward pass (activation checkpointing), where they would "
                "use the module's own parameters instead of the kernel's; compute the kernel without "
                "checkpointing"
            )
        cotangents = [
            _unexpanded(c, z.new_zeros(R, *z.shape) if d is None else d, R, B) for c, z, d in zip(all_calls, zs, dzs)
        ]
    result, k = [], 0
    for layer in layers:
        n = len(calls[layer.module])
        layer_dzs = cotangents[k : k + n]
        if isinstance(layer.module, OpSite):  # cotangents [R, B, T, m], as the rule reads a dense layer's
            layer_dzs = [
                samples_first(d, out_layout, B, lead=1) for d, (_, out_layout) in zip(layer_dzs, layer.module.layouts)
            ]
        result.append(([c.input for c in calls[layer.module]], layer_dzs))
        k += n
    return result, out.detach()


def layer_captures(
    layers: list[Layer], captured: list[tuple[list[Tensor], list[Tensor]]]
) -> list[tuple[Layer, list[Tensor], list[Tensor]]]:
    """What :func:`capture` kept of each layer, ``(layer, inputs, cotangents)``, for the layers with a
    differentiated parameter: a tied lookup layer's followed by its heads' rows (:func:`_with_head_rows`), a
    layer restricted to rows of its output with the cotangents of those rows; a tied head without a
    differentiated bias has nothing of its own.

    Raises:
        StructureChangedError: a cotangent is nonzero outside the rows that the plan found (see :func:`_check_rows`).
    """
    kept = {layer.module: (layer, xs, dzs) for layer, (xs, dzs) in zip(layers, captured)}
    result = []
    for layer, (xs, dzs) in zip(layers, captured):
        if layer.heads:
            xs, dzs = _with_head_rows(layer, [kept[h] for h in layer.heads], xs, dzs)
        elif layer.support:
            rows = torch.tensor(layer.support, dtype=torch.long, device=dzs[0].device)
            for dz in dzs:
                _check_rows(dz, rows, layer.module)
            dzs = [dz.index_select(-1, rows) for dz in dzs]
        if layer.names:
            result.append((layer, xs, dzs))
    return result


def _check_rows(dz: Tensor, rows: Tensor, module: Any) -> None:
    """Refuse a cotangent ``dz`` ``[..., m]`` of ``module``'s output that is nonzero outside ``rows``: the output
    reads other rows of it for other samples than those the plan probed, so that they are not known in advance.
    (Two reductions: no copy of ``dz``.)"""
    axes = tuple(range(dz.dim() - 1))
    read = dz.amax(dim=axes).ne(0) | dz.amin(dim=axes).ne(0)
    read[rows] = False
    if bool(read.any()):
        raise StructureChangedError(
            f"the output depends on rows of {module}'s output outside the {len(rows)} it depended on for the "
            "samples the plan probed (an output that selects other rows, e.g. other label words, for other "
            "samples), so the rows are not known in advance"
        )


def _with_head_rows(
    layer: Layer, heads: list[tuple[Layer, list[Tensor], list[Tensor]]], xs: list[Tensor], dzs: list[Tensor]
) -> tuple[list[Tensor], list[Tensor]]:
    """A tied lookup layer's captured inputs ``xs`` and cotangents ``dzs``, followed by its heads' rows: the rows
    ``S`` of its support ``[B, |S|]``, and their cotangents ``Σ_heads Σ_t D_t[c] h_t`` ``[R, B, |S|, d]`` (see
    :class:`~pntk.kernels.structured.rules.TiedLookupRule`).

    Raises:
        StructureChangedError: a head's output cotangent is nonzero outside the support that the plan found
            on its probe samples: the output depends on other vocabulary rows for other samples.
    """
    B, R, d = dzs[0].shape[1], dzs[0].shape[0], dzs[0].shape[-1]
    support = torch.tensor(layer.support, dtype=torch.long, device=dzs[0].device)
    rows = dzs[0].new_zeros(R, B, len(layer.support), d)
    for head, head_xs, head_dzs in heads:
        A = head.rule.inputs(head.module, head_xs)[0]  # [B, T, d]
        D = head.rule.cotangents(head.module, head_dzs)[0]  # [B, R, T, V]
        _check_rows(D, support, head.module)
        rows += torch.einsum("brtv,btd->rbvd", D.index_select(-1, support), A)
    return [*xs, support.expand(B, -1)], [*dzs, rows]


def _unexpanded(call: Call, d: Tensor, R: int, B: int) -> Tensor:
    """The cotangent ``[R, B, ...]`` of a call's output; for a shared call, of the output ``z`` itself, from that
    of the expanded view ``y`` (a batched backward pass through the views from ``z`` to ``y``)."""
    if call.source is None or call.source[0] is call.source[1]:
        return d
    z, y = call.source
    (dz,) = torch.autograd.grad(y, z, d.reshape(R * B, *y.shape), is_grads_batched=True)
    return dz.reshape(R, B, *z.shape)


#: Functions that make a view or a copy of one tensor's numbers, without mixing in others: what a shared
#: output may go through before it meets the samples.
_VIEWS = {
    "permute",
    "unsqueeze",
    "squeeze",
    "view",
    "reshape",
    "transpose",
    "movedim",
    "flatten",
    "unflatten",
    "contiguous",
    "__getitem__",
    "to",
    "type_as",
}


class _SharedOutputs(TorchFunctionMode):
    """Follows the outputs of shared calls through views, and expands the first with a leading axis of 1 to the
    ``B`` samples (see the note [Calls shared by all samples])."""

    def __init__(self, B: int) -> None:
        super().__init__()
        self.B = B
        self.followed: dict[int, tuple[Call, Tensor, Tensor]] = {}  # id(view): (call, output, view)

    def follow(self, call: Call, z: Tensor) -> None:
        self.followed[id(z)] = (call, z, z)

    def expand(self, call: Call, z: Tensor, view: Tensor) -> Tensor:
        """``view`` expanded to the samples, recorded as the call's output."""
        y = view.expand(self.B, *view.shape[1:])
        call.output, call.output_version, call.source = y, y._version, (z, view)
        return y

    def __torch_function__(self, func, types, args=(), kwargs=None):
        result = func(*args, **(kwargs or {}))
        if (
            self.followed
            and args
            and isinstance(result, Tensor)
            and id(args[0]) in self.followed
            and getattr(func, "__name__", None) in _VIEWS
        ):
            call, z, _ = self.followed[id(args[0])]
            if call.source is None:
                if result.dim() > 0 and result.shape[0] == 1:
                    return self.expand(call, z, result)
                self.followed[id(result)] = (call, z, result)
        return result
