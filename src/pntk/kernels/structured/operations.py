"""Rules by operation: a parameter that enters the network as the weight of a linear operation, whatever
module owns it.

``F.linear(x, W, b)``, ``torch.addmm(b, x, W)`` and ``x @ W`` (``torch.matmul``, ``mm``; ``W`` a 2-d parameter
or its ``.T``/``.mT``/``.t()``) compute ``z_t = W a_t + b`` at every row ``t`` of ``x``, exactly what the
dense rule factors: GPT-2's ``Conv1D`` (``addmm`` on ``x.view(-1, n)``), hand-written LoRA adapters
(``x @ A.T``), custom layers of model zoos. ``w * x`` (``torch.mul``) with a parameter ``w`` that broadcasts
against ``x`` is an elementwise scale (T5's ``T5LayerNorm``, a layer scale), which ``ScaleRule`` materialises.
A ``TorchFunctionMode`` sees every such call made by Python code
of the model, and those inside ``F.multi_head_attention_forward`` and the recurrent layers' kernels, which it
replays (:mod:`pntk.kernels.structured.replays`); not those inside another torch function implemented in
Python, whose parameters then fall back.

# NOTE: [Where the samples are in an operation's operand]
# A module's input has its samples on the leading axis; an operation's need not: ``Conv1D`` merges them with
# the positions (``[B·T, n]``), ``nn.MultiheadAttention`` works sequence-first (``[T, B, n]``, then
# ``[T·B, n]``). The plan runs the model on one sample and on the same sample twice. An axis whose size goes
# from 1 to 2 (every other axis unchanged) is the sample axis. A leading axis that doubles from ``L`` to
# ``2L`` merges samples with positions, sample-major if the rows of the pair are the single sample's rows
# twice over (``[x; x]``), sample-minor if they are interleaved (``x_0, x_0, x_1, x_1, ...``); when the rows
# cannot tell the two apart (all equal), the operation is not ruled. Anything else is not ruled either. The
# check is the same for the operation's output, and the rows of every block are put samples-first the same
# way before the dense rule reads them.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor
from torch.overrides import TorchFunctionMode

from .replays import replay
from .rules import LinearRule, ScaleRule

#: A sample axis: ``("axis", k)``, or the leading axis merging samples and positions, ``("major",)`` or
#: ``("minor",)``; for a scale ``w * x``, ``("scale", S, perm, T)``: samples on axis 0, the per-sample shape
#: ``S`` of the product, its axes ordered ``perm`` (those along which ``w`` broadcasts, then ``w``'s own) and
#: ``T`` positions along the first ones.
Layout = tuple

#: The operations with a weight operand, by name: (index of the input, index of the weight, index of the bias).
_OPERATIONS = {
    "linear": (0, 1, 2),
    "addmm": (1, 2, 0),
    "matmul": (0, 1, None),
    "__matmul__": (0, 1, None),
    "mm": (0, 1, None),
}

#: Elementwise products: a parameter operand is a scale (either operand).
_PRODUCTS = {"mul", "__mul__", "__rmul__"}

#: Views that keep every number of a 2-d weight (a transpose): an operation on them uses the weight.
_TRANSPOSES = {"T", "mT", "t"}


@dataclass(frozen=True)
class OpSite:
    """A parameter used as the weight of linear operations, ruled like a dense layer.

    Attributes:
        weight: the parameter's name; ``bias``: that of the bias added by the same operations, if any.
        in_features, out_features: ``n`` and ``m``.
        layouts: per call, where the samples are in its input and in its output.
        operation: the name of the (first call's) operation.

    Equal sites (the same weight used the same way) are one layer: the plans of two blocks agree.
    """

    weight: str
    bias: str | None
    in_features: int
    out_features: int
    layouts: tuple[tuple[Layout, Layout], ...] = ()
    operation: str = "linear"

    def __repr__(self) -> str:
        return f"{self.operation} on {self.weight}"


@dataclass
class OpCall:
    """One call of a linear operation on a weight parameter: its input and output, and the bias used."""

    weight: str
    bias: str | None
    input: Tensor
    output: Tensor
    operation: str = "linear"
    input_version: int = 0
    output_version: int = 0

    def __post_init__(self) -> None:
        self.input_version, self.output_version = self.input._version, self.output._version


class OperationCalls(TorchFunctionMode):
    """Records the linear operations whose weight is one of ``names`` (by ``id`` of the tensor).

    Args:
        names: ``{id(tensor): name}`` of the candidate weights and biases.
        on_call: called with each recorded call; what it returns (if not ``None``) replaces the output.
    """

    def __init__(self, names: dict[int, str], on_call: Callable[[OpCall], Tensor | None] | None = None) -> None:
        super().__init__()
        self.names = dict(names)
        self.calls: list[OpCall] = []
        self.on_call = on_call
        self._views: list[Tensor] = []  # kept alive, so that their ids stay theirs during the pass

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        inside = replay(func, args, kwargs)
        if inside is not None:
            with self:  # the mode is off while it handles a call: on again, to see the replay's operations
                return inside()
        result = func(*args, **kwargs)
        name = getattr(func, "__name__", "")
        if name == "__get__":
            name = getattr(getattr(func, "__self__", None), "__name__", "")
        if name in _TRANSPOSES and args and id(args[0]) in self.names and isinstance(result, Tensor):
            self.names[id(result)] = self.names[id(args[0])]
            self._views.append(result)
        elif name in _PRODUCTS and not kwargs and len(args) == 2 and isinstance(result, Tensor):
            w = [k for k, a in enumerate(args) if isinstance(a, Tensor) and id(a) in self.names]
            x = args[1 - w[0]] if len(w) == 1 else None
            if isinstance(x, Tensor):  # a product with a number or of two parameters is not a scale
                result = self._record(OpCall(self.names[id(args[w[0]])], None, x, result, "mul"))
        elif name in _OPERATIONS and not kwargs and isinstance(result, Tensor):
            i, w, b = _OPERATIONS[name]
            weight = args[w] if len(args) > w else None
            # Sizes are read from .shape, never by calling torch functions (which a mode below would see).
            if isinstance(weight, Tensor) and len(weight.shape) == 2 and id(weight) in self.names:
                bias = args[b] if b is not None and len(args) > b else None
                bias_name = None
                if isinstance(bias, Tensor) and id(bias) in self.names:  # a constant bias does not matter
                    if len(bias.shape) != 1:
                        return result  # not a per-feature bias that the rule knows: not recorded, so not ruled
                    bias_name = self.names[id(bias)]
                result = self._record(OpCall(self.names[id(weight)], bias_name, args[i], result, name.strip("_")))
        return result

    def _record(self, call: OpCall) -> Tensor:
        """Records ``call``; its output, as :attr:`on_call` may replace it."""
        self.calls.append(call)
        replaced = None if self.on_call is None else self.on_call(call)
        return call.output if replaced is None else replaced


def nearly_equal(a: Tensor, b: Tensor) -> bool:
    """Same shape, and equal to ``1e-4`` of ``a``'s largest magnitude: the same numbers computed another way."""
    scale = a.abs().max().clamp(min=torch.finfo(a.dtype).tiny) if a.numel() else 1.0
    return a.shape == b.shape and bool(((a - b).abs() <= 1e-4 * scale).all())


def layout(one: Tensor, two: Tensor) -> Layout | None:
    """Where the samples are in an operand, from its values on one sample and on that sample twice (see the
    note [Where the samples are in an operation's operand]); ``None`` if that cannot be told."""
    if one.dim() < 2 or one.dim() != two.dim() or one.shape[-1] != two.shape[-1]:
        return None
    differ = [k for k in range(one.dim() - 1) if one.shape[k] != two.shape[k]]
    if len(differ) != 1:
        return None
    k = differ[0]
    if one.shape[k] == 1 and two.shape[k] == 2:
        return ("axis", k)
    if one.dim() == 2 and two.shape[0] == 2 * one.shape[0]:
        L = one.shape[0]
        major = nearly_equal(two[:L], one) and nearly_equal(two[L:], one)
        minor = nearly_equal(two[0::2], one) and nearly_equal(two[1::2], one)
        if major != minor:
            return ("major",) if major else ("minor",)
    return None


def scale_layout(weight: torch.Size, x1: Tensor, x2: Tensor, z1: Tensor, z2: Tensor) -> Layout | None:
    """The layout of a scale ``z = w * x`` from its operand and product on one sample and on two, or ``None``
    unless both have their samples on axis 0 and ``w`` broadcasts against the per-sample shape ``S``."""
    if z1.dim() != x1.dim() or any(t.dim() == 0 for t in (z1, x1)):
        return None
    if (z1.shape[0], z2.shape[0], x1.shape[0], x2.shape[0]) != (1, 2, 1, 2):
        return None
    S = tuple(z1.shape[1:])
    if z2.shape[1:] != z1.shape[1:] or x1.shape[1:] != x2.shape[1:] or len(weight) > len(S):
        return None
    w = (1,) * (len(S) - len(weight)) + tuple(weight)
    if any(a not in (1, s) for a, s in zip(w, S)):
        return None
    broadcast = [k for k in range(len(S)) if w[k] == 1]
    own = [k for k in range(len(S)) if w[k] != 1]
    return ("scale", S, tuple(broadcast + own), math.prod(S[k] for k in broadcast))


def samples_first(t: Tensor, where: Layout, B: int, lead: int = 0) -> Tensor:
    """``t`` with its ``B`` samples on axis ``lead`` and its positions flattened after them:
    ``[*lead, B, T, features]``."""
    head = t.shape[:lead]
    if where[0] == "scale":
        _, S, perm, T = where
        t = t.expand(*head, B, *S).permute(*range(lead + 1), *(lead + 1 + k for k in perm))
        return t.reshape(*head, B, T, -1)
    if where[0] == "axis":
        t = t.movedim(lead + where[1], lead)
        return t.reshape(*head, B, -1, t.shape[-1])
    if where[0] == "major":
        return t.reshape(*head, B, -1, t.shape[-1])
    return t.reshape(*head, -1, B, t.shape[-1]).transpose(lead, lead + 1)


class OperationRule(LinearRule):
    """The dense rule for an :class:`OpSite`, whose calls' inputs and output cotangents are put samples-first
    (:func:`samples_first`) when they are captured."""

    def applies(self, module):
        return False  # never by type: sites come from the plan

    def nominal_shape(self, module):
        return None


OPERATION_RULE = OperationRule()

SCALE_RULE = ScaleRule()
