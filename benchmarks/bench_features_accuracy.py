"""Why a k = 4096 sketch falls short of exact pNTK ridge regression, and what closes the gap.

Usage (from the repository root; under the shared lock, it holds a 1.6 GB kernel)::

    flock /work/wt/_cpu.lock .venv/bin/python benchmarks/bench_features_accuracy.py [--n 20000] [--k 4096]
        [--threads 2] [--scales 1e-3 1e-2 1e-1] [--out benchmarks/out/features_accuracy.json]

MNIST-1D (``features_data.mnist1d``, 25,000 samples: 20,000 train, 5,000 test), the MLP 40-512-512-10 at
initialisation, float32. At N = ``--n``: the exact pNTK ``K`` (float32) and its ridge regression (PCG to a relative
residual of 1e-6) for ``λ = scale · mean diag K``, beside the same regression on ``k`` features from the Kronecker
projection (8 × 8 blocks and 1 × 1 blocks, whose variances differ about 16-fold), the dense-in-layers orthogonal
variant, and Nyström with ``k`` uniformly drawn landmarks; for each: ``‖Φ Φᵀ − K‖_F / ‖K‖_F``, the top
eigenvalues, the effective dimension ``Σ μ_i / (μ_i + λ)`` seen by the features, and test accuracy. Prints JSON.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

import harness  # noqa: E402
import pntk  # noqa: E402
from features_data import mlp, mnist1d  # noqa: E402
from pntk.analysis import extreme_eigenvalues  # noqa: E402
from pntk.solvers import SolverOptions, ridge_regression  # noqa: E402


def relative_error(Phi: torch.Tensor, K: torch.Tensor) -> float:
    """``‖Φ Φᵀ − K‖_F / ‖K‖_F``, by row blocks."""
    err2 = sum(
        float((Phi[s : s + 1000] @ Phi.T - K[s : s + 1000]).double().square().sum()) for s in range(0, len(K), 1000)
    )
    return math.sqrt(err2) / float(K.double().norm())


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=20000)
    parser.add_argument("--n-test", type=int, default=5000)
    parser.add_argument("--k", type=int, default=4096)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--scales", type=float, nargs="+", default=[1e-3, 1e-2, 1e-1])
    parser.add_argument("--methods", nargs="+", default=["kronecker-8x8", "kronecker-1x1", "nystrom"])
    parser.add_argument("--out", type=Path)
    parser.add_argument("--no-exact", dest="exact", action="store_false", help="skip the exact regressions")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    data = mnist1d(25000)
    n, k = args.n, args.k
    x, y = torch.from_numpy(data["x"][:n]), data["y"][:n]
    x_test, y_test = torch.from_numpy(data["x_test"][: args.n_test]), data["y_test"][: args.n_test]
    Y = torch.from_numpy(np.eye(10)[y])
    net = mlp()
    result: dict = {"n": n, "n_test": len(y_test), "k": k, "threads": args.threads, "load": harness.load_average()}
    t0 = time.perf_counter()
    K, K_test = pntk.pntk(net, x), pntk.pntk(net, x_test, x)
    result["exact_kernel_s"] = time.perf_counter() - t0
    scale = float(K.diagonal().double().mean())
    print(json.dumps({"exact_kernel_s": result["exact_kernel_s"]}), flush=True)
    lam_exact = np.asarray(extreme_eigenvalues(K, 10))
    result["exact_top_eigenvalues"] = [float(v) for v in lam_exact]
    result["exact"] = {}
    for s in args.scales if args.exact else []:
        t0 = time.perf_counter()
        options = SolverOptions(tol=1e-6, rank=500, maxiter=2000)
        r = ridge_regression(K, K_test, Y, ridge=s * scale, options=options)
        result["exact"][str(s)] = {
            "accuracy": float((r.predictions.argmax(1).numpy() == y_test).mean()),
            "iterations": r.cg.iterations,
            "converged": r.cg.converged,
            "seconds": time.perf_counter() - t0,
        }
        print(json.dumps({"exact": s, **result["exact"][str(s)]}), flush=True)
    result["sketches"] = []
    for method in args.methods:
        t0 = time.perf_counter()
        if method.startswith("kronecker"):
            c = int(method.split("-")[1].split("x")[0])
            fmap = pntk.features.FeatureMap(net, k=k, seed=0, block=(c, c))
            Phi, Phi_test = fmap(x), fmap(x_test)
        else:
            landmarks = x[torch.randperm(n, generator=torch.Generator().manual_seed(0))[:k]]
            nys = pntk.features.Nystrom(net, landmarks)
            Phi, Phi_test = nys(x), nys(x_test)
        seconds = time.perf_counter() - t0
        mu = pntk.features.FeatureKernel(Phi).eigenvalues().numpy()
        row = {
            "method": method,
            "k": int(Phi.shape[1]),
            "seconds": seconds,
            "relative_error": relative_error(Phi, K),
            "top_eigenvalues": mu[:10].tolist(),
            "top_eigenvalue_relative_error": float(np.abs(mu[:10] - lam_exact).max() / lam_exact[0]),
            "trace_ratio": float(mu.sum() / K.diagonal().double().sum()),
            "accuracy": {},
            "effective_dimension": {},
        }
        for s in args.scales:
            lam = s * scale
            F = pntk.features.feature_regression(Phi, Phi_test, Y, ridge=lam)
            row["accuracy"][str(s)] = float((F.argmax(1) == y_test).mean())
            row["effective_dimension"][str(s)] = float((mu / (mu + lam)).sum())
        print(json.dumps(row), flush=True)
        result["sketches"].append(row)
        del Phi, Phi_test
    result["peak_rss"] = harness.peak_rss_bytes()
    print(json.dumps(result))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
