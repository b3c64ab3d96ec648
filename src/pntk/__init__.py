"""pntk: empirical neural tangent kernels and the pseudo-NTK of PyTorch models.

>>> import torch, pntk
>>> net = torch.nn.Sequential(torch.nn.Linear(4, 16), torch.nn.ReLU(), torch.nn.Linear(16, 3)).eval()
>>> x = torch.randn(6, 4)
>>> pntk.entk(net, x).shape, pntk.pntk(net, x).shape
(torch.Size([6, 6, 3, 3]), torch.Size([6, 6]))
"""

__version__ = "0.1.0"

from . import analysis, data, errors, features, models, operators, probe, solvers
from .compute import compute
from .errors import PntkError
from .features import (
    FeatureKernel,
    FeatureMap,
    FeatureRidge,
    FeatureStore,
    Nystrom,
    compute_features,
    feature_regression,
)
from .kernels import Engine, Kind, LabelWords
from .kernels.api import entk, kernel, pntk, trace_ntk
from .kernels.explain import Explanation, explain
from .operators import KernelOperator, operator
from .planning import Options, Plan, plan
from .store import KernelStore, StoreLockedError, StoreMismatchError, open
from .training import TrainConfig, load_checkpoint, save_checkpoint, train

__all__ = [
    "Engine",
    "Explanation",
    "FeatureKernel",
    "FeatureMap",
    "FeatureRidge",
    "KernelOperator",
    "LabelWords",
    "KernelStore",
    "LabelWords",
    "Kind",
    "Options",
    "Plan",
    "StoreLockedError",
    "StoreMismatchError",
    "TrainConfig",
    "__version__",
    "analysis",
    "compute",
    "data",
    "entk",
    "explain",
    "feature_regression",
    "features",
    "kernel",
    "load_checkpoint",
    "models",
    "Nystrom",
    "open",
    "plan",
    "operator",
    "operators",
    "pntk",
    "save_checkpoint",
    "solvers",
    "trace_ntk",
    "train",
    "errors",
    "probe",
    "PntkError",
    "FeatureStore",
    "compute_features",
]
