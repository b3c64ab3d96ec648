"""Reading a user's choice (a string or an enum member) as a member of a string enum."""

from __future__ import annotations

import enum
from typing import TypeVar

import torch

from .errors import InputError

_E = TypeVar("_E", bound=enum.Enum)


def parse_enum(cls: type[_E], value: object, what: str) -> _E:
    """Return ``value`` as a member of ``cls``, accepting the member or its string value.

    Raises:
        ValueError: ``value`` names no member; the message lists the valid ones.
    """
    if isinstance(value, cls):
        return value
    try:
        return cls(value)
    except ValueError:
        valid = ", ".join(repr(m.value) for m in cls)
        raise ValueError(f"unknown {what} {value!r}; valid {what}s are {valid}") from None


def parse_dtype(value: torch.dtype | str | None) -> torch.dtype | None:
    """A torch dtype from a dtype or its name (``"float64"``, ``"torch.float64"``, ``"bf16"``); ``None`` stays.

    Raises:
        InputError: not the name of a floating dtype (a ``ValueError``).
    """
    if value is None or isinstance(value, torch.dtype):
        return value
    name = str(value).removeprefix("torch.")
    dtype = getattr(torch, _DTYPE_ALIASES.get(name, name), None)
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise InputError(
            f"unknown dtype {value!r}; use a floating dtype such as torch.float32, torch.float64, "
            "'float32', 'float64', 'bfloat16' or 'float16'"
        )
    return dtype


_DTYPE_ALIASES = {"f32": "float32", "f64": "float64", "bf16": "bfloat16", "f16": "float16", "half": "float16"}
