"""Where and how experiments run: devices, dtypes, BLAS threads and wall-clock timing."""

# NOTE: [BLAS threads on a small CPU]
# Kernels are computed by torch (MKL and OpenMP threads), the analyses by NumPy/SciPy (OpenBLAS threads). On a
# machine with as few cores as threads, OpenBLAS's multithreaded eigensolvers degrade by two orders of
# magnitude as soon as the cores are contended — by torch's spinning OpenMP workers or by any other process:
# a 640 × 640 ``eigvalsh`` takes 1–8 s with 2 threads and 0.02–0.05 s with one on the 2-core machine. The
# analyses of a CPU run are matrices of at most a few thousand rows, so one BLAS thread costs little there.

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TypeVar

import torch
from threadpoolctl import threadpool_limits

T = TypeVar("T")

DTYPES = {"float32": torch.float32, "float64": torch.float64}


def default_device() -> str:
    """``"cuda"`` when a GPU is visible, else ``"cpu"``."""
    return "cuda" if torch.cuda.is_available() else "cpu"


def torch_dtype(name: str) -> torch.dtype:
    """``"float32"`` or ``"float64"`` as a torch dtype; a ValueError that lists both otherwise.

    Example:
        >>> torch_dtype("float32")
        torch.float32
    """
    if name not in DTYPES:
        raise ValueError(f"unknown dtype {name!r}; valid values are {', '.join(map(repr, DTYPES))}")
    return DTYPES[name]


@contextmanager
def analysis_threads(device: str) -> Iterator[None]:
    """Run NumPy/SciPy's BLAS on one thread for a CPU run; leave it alone on a GPU run.

    See NOTE [BLAS threads on a small CPU]. torch's own threads are not affected.
    """
    if torch.device(device).type != "cpu":
        yield
        return
    with threadpool_limits(limits=1, user_api="blas"):
        yield


def timed(fn: Callable[[], T]) -> tuple[T, float]:
    """``fn()`` and its wall time in seconds, waiting for the GPU to finish when there is one."""
    synchronize = torch.cuda.synchronize if torch.cuda.is_available() else (lambda: None)
    synchronize()
    start = time.perf_counter()
    value = fn()
    synchronize()
    return value, time.perf_counter() - start
