"""Reading a user's choice (a string or an enum member) as a member of a string enum."""

from __future__ import annotations

import enum
from typing import TypeVar

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
