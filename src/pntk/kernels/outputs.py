"""Output selection: which numbers of a model's output are the ``O`` outputs ``f(x) ∈ R^O`` of a kernel.

A kernel is taken of a map ``[B, *input] → [B, O]``. Models that return something else get an ``output=``:

- a callable applied to the model's output (``lambda out: out[0]``);
- ``"logits"`` (any field name) for a Hugging Face ``ModelOutput`` or a dict;
- :class:`LabelWords` for a language model's ``[B, L, V]`` logits: the logits of a few label words at one
  position, the eNTK of prompt-based fine-tuning (Malladi et al., 2023).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from torch import Tensor

#: What ``output=`` accepts: ``None`` (the output itself), a field name, or a callable.
OutputLike = str | Callable[[Any], Tensor] | None


@dataclass(frozen=True)
class LabelWords:
    """The logits of label words ``ids`` at ``position`` of a language model's ``[B, L, V]`` output: ``[B, O]``
    with ``O = len(ids)``.

    Attributes:
        ids: the vocabulary ids of the label words, e.g. the tokens of " great" and " terrible".
        position: the sequence position, e.g. ``-1`` for a causal model's next token or the index of the
            mask token in a masked model's prompt (the same in every sample).
        field: the field of a ``ModelOutput``/dict that holds the logits.

    Example:
        >>> import torch
        >>> select = LabelWords(ids=[3, 7], position=-1)
        >>> select(torch.randn(2, 5, 10)).shape
        torch.Size([2, 2])
    """

    ids: Sequence[int]
    position: int = -1
    field: str = "logits"

    def __post_init__(self) -> None:
        if len(self.ids) == 0 or not all(isinstance(i, int) and not isinstance(i, bool) for i in self.ids):
            raise ValueError(f"LabelWords needs a non-empty list of integer vocabulary ids, got {self.ids!r}")
        object.__setattr__(self, "ids", tuple(self.ids))

    def __call__(self, out: Any) -> Tensor:
        logits = out if isinstance(out, Tensor) else _field(out, self.field)
        if logits.dim() != 3:
            raise ValueError(
                f"LabelWords selects from logits [B, L, V], but the model's {self.field} have shape "
                f"{list(logits.shape)}; for [B, V] select columns with output=lambda out: out[:, ids]"
            )
        L, V = logits.shape[1:]
        if not -L <= self.position < L:
            raise ValueError(f"LabelWords position {self.position} is outside the sequence of length {L}")
        bad = [i for i in self.ids if not 0 <= i < V]
        if bad:
            raise ValueError(f"LabelWords ids {bad} are outside the vocabulary of size {V}")
        return logits[:, self.position, list(self.ids)]


def _field(out: Any, name: str) -> Tensor:
    """``out[name]`` (a dict or ``ModelOutput``) or ``out.name``, with an error that lists what there is."""
    if isinstance(out, Mapping) and name in out:
        value = out[name]
    elif not isinstance(out, Mapping) and hasattr(out, name):
        value = getattr(out, name)
    else:
        fields = list(out.keys()) if isinstance(out, Mapping) else [a for a in vars(out) if not a.startswith("_")]
        raise ValueError(f"the model's output ({type(out).__name__}) has no field {name!r}; it has {fields}")
    if not isinstance(value, Tensor):
        raise ValueError(f"the model's output field {name!r} is a {type(value).__name__}, not a tensor")
    return value


def output_selector(output: OutputLike) -> Callable[[Any], Tensor] | None:
    """The callable that ``output=`` names; ``None`` keeps the model's output.

    Raises:
        TypeError: ``output`` is neither ``None``, a string nor a callable.
    """
    if output is None or callable(output):
        return output
    if isinstance(output, str):
        name = output

        def select(out: Any) -> Tensor:
            return _field(out, name)

        select.__qualname__ = select.__name__ = f"field {name!r}"
        return select
    raise TypeError(
        f"output= must be None, a field name such as 'logits', a callable or pntk.LabelWords, got "
        f"{type(output).__name__}"
    )


def describe(out: Any) -> str:
    """A short description of a model output for an error message: its type, shape or fields."""
    if isinstance(out, Tensor):
        return f"a tensor of shape {list(out.shape)}"
    if isinstance(out, Mapping):
        fields = {k: list(v.shape) if isinstance(v, Tensor) else type(v).__name__ for k, v in out.items()}
        return f"a {type(out).__name__} with fields {fields}"
    if isinstance(out, (tuple, list)):
        return f"a {type(out).__name__} of {len(out)} items"
    return f"a {type(out).__name__}"


def output_hint(out: Any) -> str:
    """What ``output=`` would fix an output that is not ``[B, O]``, or ``""``."""
    if isinstance(out, Mapping) and isinstance(out.get("logits"), Tensor):
        if out["logits"].dim() == 3:
            return "; pass output=pntk.LabelWords(ids=[...], position=-1) to take label-word logits at a position"
        return "; pass output='logits'"
    if isinstance(out, Tensor) and out.dim() == 3:
        return (
            "; for a language model's [B, L, V] logits pass output=pntk.LabelWords(ids=[...], position=...), "
            "or any callable with output="
        )
    if isinstance(out, (tuple, list)) and out and isinstance(out[0], Tensor):
        return "; pass output=lambda out: out[0] to take the first item"
    return ""


def parse_output(text: str) -> str | LabelWords:
    """``output=`` from its text form (the CLI's ``--output``): a field name, or label words at a position.

    ``FIELD`` selects a field of a ``ModelOutput``/dict (``logits``); ``IDS@POSITION`` (``3,7@-1``) or
    ``FIELD:IDS@POSITION`` the logits of vocabulary ids ``IDS`` at ``POSITION`` (:class:`LabelWords`).

    Raises:
        ValueError: an empty text, ids or a position that are not integers.

    Example:
        >>> parse_output("logits"), parse_output("3,7@-1")
        ('logits', LabelWords(ids=(3, 7), position=-1, field='logits'))
    """
    text = text.strip()
    if "@" not in text:
        if not text.isidentifier():
            raise ValueError(
                f"output {text!r} is neither a field name (logits) nor label words at a position (3,7@-1 or "
                "logits:3,7@-1)"
            )
        return text
    head, _, position = text.rpartition("@")
    field, _, ids = head.rpartition(":")
    try:
        return LabelWords([int(i) for i in ids.split(",")], int(position), field or "logits")
    except ValueError:
        raise ValueError(
            f"output {text!r}: label words are [FIELD:]IDS@POSITION with integer ids and position, e.g. 3,7@-1"
        ) from None


def output_key(output: OutputLike) -> str | None:
    """What ``output=`` selects, as text for a store's spec; ``None`` for the model's own output.

    A callable is named by its module and qualified name (its code is not read: the store's behaviour probe
    compares the outputs themselves).

    >>> output_key("logits"), output_key(LabelWords([3, 7]))
    ('logits', 'logits[:, -1, [3, 7]]')
    """
    if output is None:
        return None
    if isinstance(output, str):
        return output
    if isinstance(output, LabelWords):
        return f"{output.field}[:, {output.position}, {list(output.ids)}]"
    return f"callable {getattr(output, '__module__', '?')}.{getattr(output, '__qualname__', type(output).__name__)}"
