"""MNIST-1D of any size, generated offline by ``mnist1d.data.make_dataset`` and cached as ``.npz`` (outside the
repository), and the benchmark's MLP 40-512-512-10."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import torch
from torch import nn

import pntk

CACHE = Path("/tmp/pntk-bench")


def mnist1d(num_samples: int, cache: Path = CACHE) -> dict[str, np.ndarray]:
    """``x`` ``[0.8·num_samples, 40]`` float32, ``y`` int64, ``x_test``, ``y_test``: the standard generator with
    ``num_samples`` (seed 42, default split), cached in ``cache`` (1.25 M samples: about 4.5 minutes, 200 MB)."""
    path = cache / f"mnist1d-{num_samples}.npz"
    if not path.exists():
        from mnist1d.data import get_dataset_args, make_dataset

        args = get_dataset_args()
        args.num_samples = num_samples
        state = random.getstate(), np.random.get_state()
        try:
            data = make_dataset(args)
        finally:
            random.setstate(state[0])
            np.random.set_state(state[1])
        cache.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp.npz")
        np.savez(
            tmp,
            x=data["x"].astype(np.float32),
            y=data["y"].astype(np.int64),
            x_test=data["x_test"].astype(np.float32),
            y_test=data["y_test"].astype(np.int64),
        )
        tmp.rename(path)
    with np.load(path) as f:
        return {key: f[key] for key in f.files}


def uniform_nystrom(net: nn.Module, x: torch.Tensor, k: int) -> pntk.features.Nystrom:
    """Nyström features of ``min(k, N)`` landmarks drawn uniformly from the rows of ``x`` (seed 0; every row
    when ``k ≥ N``), in their order in ``x``."""
    index = torch.randperm(len(x), generator=torch.Generator().manual_seed(0))[:k].sort().values
    return pntk.features.Nystrom(net, x[index])


def mlp(seed: int = 0) -> nn.Module:
    """The MLP 40-512-512-10 (PyTorch's default initialisation from ``seed``), float32, eval mode."""
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(40, 512), nn.ReLU(), nn.Linear(512, 512), nn.ReLU(), nn.Linear(512, 10)).eval()


if __name__ == "__main__":
    import sys

    for n in map(int, sys.argv[1:] or ["1250000"]):
        d = mnist1d(n)
        print(n, {k: v.shape for k, v in d.items()})
