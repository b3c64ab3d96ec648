"""Run under torchrun: kernel-operator products, Lanczos and PCG with the samples shared among the ranks.

Usage: ``torchrun --nproc-per-node 2 operator_worker.py OUT.npz [STORE]``; rank 0 writes the results.
"""

from __future__ import annotations

import sys

import numpy as np
import torch

import pntk
from pntk.distributed import process_group
from pntk.solvers import SolverOptions, eigsh, ridge_regression


def make_problem():
    torch.manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.Linear(5, 12), torch.nn.Tanh(), torch.nn.Linear(12, 12), torch.nn.ReLU(), torch.nn.Linear(12, 3)
    )
    g = torch.Generator().manual_seed(1)
    x = torch.randn(30, 5, generator=g, dtype=torch.float64)
    x_test = torch.randn(6, 5, generator=g, dtype=torch.float64)
    Y = torch.randn(30, 3, generator=g, dtype=torch.float64)
    V = torch.randn(90, 4, generator=g, dtype=torch.float64)
    return model.double().eval(), x, x_test, Y, V


def results(store: str | None = None) -> dict[str, np.ndarray]:
    model, x, x_test, Y, V = make_problem()
    out = {}
    for kind in ("pntk", "trace", "entk"):
        op = pntk.operator(model, x, kind=kind, batch_size=7)
        out[f"{kind}_product"] = (op @ V[: op.shape[1]]).numpy()
        out[f"{kind}_diagonal"] = op.diagonal().numpy()
    op = pntk.operator(model, x, batch_size=7)
    out["eigenvalues"] = eigsh(op, 4, options=SolverOptions(tol=1e-10)).eigenvalues.numpy()
    cross = pntk.operator(model, x_test, x, batch_size=4)
    ridge = 0.1 * op.diagonal().mean().item()
    fit = ridge_regression(op, cross, Y, ridge=ridge, options=SolverOptions(tol=1e-10, rank=10))
    out["predictions"] = fit.predictions.numpy()
    if store is not None:
        out["store_product"] = (pntk.open(store).operator() @ V[:30]).numpy()
    return out


if __name__ == "__main__":
    torch.set_num_threads(1)
    with process_group() as group:
        values = results(sys.argv[2] if len(sys.argv) > 2 else None)
        if group.is_leader:
            np.savez(sys.argv[1], **values)
