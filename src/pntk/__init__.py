"""pntk: empirical neural tangent kernels and the pseudo-NTK of PyTorch models.

>>> import torch, pntk
>>> net = torch.nn.Sequential(torch.nn.Linear(4, 16), torch.nn.ReLU(), torch.nn.Linear(16, 3)).eval()
>>> x = torch.randn(6, 4)
>>> pntk.entk(net, x).shape, pntk.pntk(net, x).shape
(torch.Size([6, 6, 3, 3]), torch.Size([6, 6]))
"""

__version__ = "0.1.0"

from . import analysis, data, models
from .compute import compute
from .kernels import Engine, Explanation, Kind, LabelWords, entk, explain, kernel, pntk, trace_ntk
from .store import KernelStore, StoreLockedError, StoreMismatchError, open
from .training import TrainConfig, load_checkpoint, save_checkpoint, train

__all__ = [
    "Engine",
    "Explanation",
    "KernelStore",
    "LabelWords",
    "Kind",
    "StoreLockedError",
    "StoreMismatchError",
    "TrainConfig",
    "__version__",
    "analysis",
    "compute",
    "data",
    "entk",
    "explain",
    "kernel",
    "load_checkpoint",
    "models",
    "open",
    "pntk",
    "save_checkpoint",
    "trace_ntk",
    "train",
]
