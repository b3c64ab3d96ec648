"""Kernel kinds, engines and the functions that compute kernel tiles."""

from .api import ENGINES, default_batch_size, entk, get_engine, kernel, pntk, trace_ntk, transpose_tile
from .engine import KernelEngine
from .explain import Explanation, explain
from .inputs import Inputs
from .kinds import Engine, Kind
from .model import FunctionalModel, functional_model
from .outputs import LabelWords

__all__ = [
    "ENGINES",
    "Engine",
    "Explanation",
    "FunctionalModel",
    "Inputs",
    "KernelEngine",
    "Kind",
    "LabelWords",
    "default_batch_size",
    "entk",
    "explain",
    "functional_model",
    "get_engine",
    "kernel",
    "pntk",
    "trace_ntk",
    "transpose_tile",
]
