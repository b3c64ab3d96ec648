"""Kernel kinds, engines and the functions that compute kernel tiles."""

from .api import ENGINES, default_batch_size, entk, get_engine, kernel, pntk, trace_ntk, transpose_tile
from .engine import KernelEngine
from .inputs import Inputs
from .kinds import Engine, Kind
from .model import FunctionalModel, functional_model

__all__ = [
    "ENGINES",
    "Engine",
    "FunctionalModel",
    "Inputs",
    "KernelEngine",
    "Kind",
    "default_batch_size",
    "entk",
    "functional_model",
    "get_engine",
    "kernel",
    "pntk",
    "trace_ntk",
    "transpose_tile",
]
