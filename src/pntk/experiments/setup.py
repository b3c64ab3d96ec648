"""What every experiment stands on: data subsets, zoo models, and the eNTK/pNTK pair in float64."""

# NOTE: [Kernel precision]
# Kernels are computed in the dtype an experiment names (``"float64"`` by default) and every analysis runs in
# float64. float32 kernels carry rounding of about 1e-7 · λ_max: harmless for the Frobenius errors and λ_max,
# but it swamps λ_min once κ passes ~1e6 (a ConvNet on MNIST-1D reaches 7e5 at width 64, where float32
# already moves λ_min by 2e-4 relative) and gives the numerically singular eNTK of a narrow ReLU network a
# spurious finite κ. On a CPU float64 costs 1.2× (MLP) to 3× (ConvNet) the time of float32, so the presets
# keep float64 for every kernel that is analysed and use float32 only where time is what is measured, and
# for the large GPU models of the paper preset.

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from threadpoolctl import threadpool_limits
from torch import nn

from ..choices import parse_enum
from ..data import Dataset, load_dataset
from ..kernels import entk, pntk
from ..models import build_model
from ..training import Loss

#: Receives one line of progress per step; ``None`` stays silent.
Log = Callable[[str], None] | None

DTYPES = {"float32": torch.float32, "float64": torch.float64}


# NOTE: [BLAS threads on a small CPU]
# Kernels are computed by torch (MKL and OpenMP threads), the analyses by NumPy/SciPy (OpenBLAS threads). On a
# machine with as few cores as threads, OpenBLAS's multithreaded eigensolvers degrade by two orders of
# magnitude as soon as the cores are contended — by torch's spinning OpenMP workers or by any other process:
# a 640 × 640 ``eigvalsh`` takes 1–8 s with 2 threads and 0.02–0.05 s with one on the 2-core machine. The
# analyses of a CPU run are matrices of at most a few thousand rows, so one BLAS thread costs little there.


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


def log_line(log: Log, message: str) -> None:
    """Send ``message`` to ``log`` unless it is ``None``."""
    if log is not None:
        log(message)


def printing_log() -> Callable[[str], None]:
    """A :data:`Log` that prints each line to stdout, stamped with the seconds since it was made."""
    start = time.perf_counter()

    def log(message: str) -> None:
        print(f"[{time.perf_counter() - start:7.1f} s] {message}", flush=True)

    return log


def torch_dtype(name: str) -> torch.dtype:
    """``"float32"`` or ``"float64"`` as a torch dtype; a ValueError that lists both otherwise."""
    if name not in DTYPES:
        raise ValueError(f"unknown dtype {name!r}; valid values are {', '.join(map(repr, DTYPES))}")
    return DTYPES[name]


def load_split(
    dataset: str, *, split: str, N: int | None, seed: int = 0, data_root: str | Path | None, device: str
) -> Dataset:
    """A stratified subset of ``N`` samples of one split, on ``device`` (see :func:`pntk.data.load_dataset`)."""
    data = load_dataset(dataset, data_root, split=split, n=N, seed=seed)
    return Dataset(data.name, data.split, data.x.to(device), data.y.to(device), data.num_classes)


def make_model(
    name: str,
    *,
    width: int,
    depth: int | None,
    data: Dataset,
    parametrization: str,
    seed: int,
    device: str,
    num_classes: int | None = None,
) -> nn.Module:
    """A freshly initialised zoo model for ``data``'s inputs, on ``device``, in eval mode.

    Args:
        name: a zoo name (``"mlp"``, ``"convnet"``, ``"resnet18"``, ``"wrn"``).
        width: the model's width.
        depth: the model's depth; ``None`` for its default.
        data: the inputs the model reads (their shape) and its number of classes ``O``.
        parametrization: ``"standard"`` or ``"ntk"``.
        seed: the initialisation seed.
        device: where the model lives.
        num_classes: ``O`` instead of the dataset's (the timing experiment varies it).
    """
    model = build_model(
        name,
        width=width,
        depth=depth,
        in_shape=tuple(data.x.shape[1:]),
        num_classes=num_classes or data.num_classes,
        parametrization=parametrization,
        seed=seed,
    )
    return model.to(device).eval()


def num_parameters(model: nn.Module) -> int:
    """``P``, the number of trainable parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def timed(fn: Callable[[], torch.Tensor]) -> tuple[torch.Tensor, float]:
    """``fn()`` and its wall time in seconds, waiting for the GPU to finish when there is one."""
    synchronize = torch.cuda.synchronize if torch.cuda.is_available() else (lambda: None)
    synchronize()
    start = time.perf_counter()
    value = fn()
    synchronize()
    return value, time.perf_counter() - start


@dataclass(frozen=True)
class KernelPair:
    """The eNTK and the pNTK of one network on the same inputs, as float64 NumPy arrays.

    Attributes:
        Theta: ``[N1, N2, O, O]`` eNTK.
        K: ``[N1, N2]`` pNTK.
        seconds_entk: wall time of the eNTK.
        seconds_pntk: wall time of the pNTK.
    """

    Theta: np.ndarray
    K: np.ndarray
    seconds_entk: float
    seconds_pntk: float


def kernel_pair(model: nn.Module, x1: torch.Tensor, x2: torch.Tensor | None = None, *, dtype: str) -> KernelPair:
    """The eNTK ``Θ`` and pNTK ``K`` of ``model`` between ``x1`` ``[N1, *input]`` and ``x2`` (``None``: ``x1``).

    Both are computed in ``dtype`` (see NOTE [Kernel precision]) and returned in float64.
    """
    dt = torch_dtype(dtype)
    Theta, seconds_entk = timed(lambda: entk(model, x1, x2, dtype=dt))
    K, seconds_pntk = timed(lambda: pntk(model, x1, x2, dtype=dt))
    return KernelPair(as_float64(Theta), as_float64(K), seconds_entk, seconds_pntk)


def as_float64(t: torch.Tensor) -> np.ndarray:
    """A tensor on any device as a float64 NumPy array."""
    return t.detach().to("cpu", torch.float64).numpy()


def training_targets(data: Dataset, loss: Loss | str) -> torch.Tensor:
    """What the network fits: centred one-hot ``[N, O]`` for the squared loss, labels ``[N]`` otherwise."""
    return data.targets(center=True) if parse_enum(Loss, loss, "loss") is Loss.MSE else data.y


@torch.no_grad()
def accuracy(model: nn.Module, data: Dataset) -> float:
    """The fraction of ``data`` whose largest output is its label."""
    return float((model(data.x).argmax(-1) == data.y).double().mean())
