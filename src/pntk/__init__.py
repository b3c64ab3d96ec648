"""pntk: empirical neural tangent kernels and the pseudo-NTK of PyTorch models.

>>> import torch, pntk
>>> net = torch.nn.Sequential(torch.nn.Linear(4, 16), torch.nn.ReLU(), torch.nn.Linear(16, 3)).eval()
>>> x = torch.randn(6, 4)
>>> pntk.entk(net, x).shape, pntk.pntk(net, x).shape
(torch.Size([6, 6, 3, 3]), torch.Size([6, 6]))
"""

from .kernels import Engine, Kind, entk, kernel, pntk, trace_ntk

__version__ = "0.1.0"

__all__ = ["Engine", "Kind", "__version__", "entk", "kernel", "pntk", "trace_ntk"]
