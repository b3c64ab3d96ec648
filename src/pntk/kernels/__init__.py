"""Kernel kinds, engines and the functions that compute kernel tiles."""

from .api import entk, kernel, pntk, trace_ntk, transpose_tile
from .engine import KernelEngine
from .inputs import Inputs
from .kinds import Engine, Kind
from .model import FunctionalModel, functional_model
from .registry import ENGINES

__all__ = [
    "ENGINES",
    "Engine",
    "FunctionalModel",
    "Inputs",
    "KernelEngine",
    "Kind",
    "entk",
    "functional_model",
    "kernel",
    "pntk",
    "trace_ntk",
    "transpose_tile",
]
