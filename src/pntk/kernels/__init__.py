"""Kernel kinds, engines and the functions that compute kernel tiles.

The kernel functions (:mod:`pntk.kernels.api`) run plans made by :mod:`pntk.planning`, which builds on the
rest of this package; they are imported on first use so that either module may be imported first.
"""

from typing import Any

from .engine import KernelEngine
from .explain import Explanation, explain
from .inputs import Inputs
from .kinds import Engine, Kind
from .model import FunctionalModel, functional_model
from .outputs import LabelWords
from .registry import ENGINES

_API = ("entk", "kernel", "pntk", "trace_ntk", "transpose_tile")


def __getattr__(name: str) -> Any:
    if name in _API:
        from . import api

        return getattr(api, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "ENGINES",
    "Engine",
    "Explanation",
    "FunctionalModel",
    "Inputs",
    "KernelEngine",
    "Kind",
    "LabelWords",
    "entk",
    "explain",
    "functional_model",
    "kernel",
    "pntk",
    "trace_ntk",
    "transpose_tile",
]
