"""Accuracy and time of pNTK ridge regression against N, for the dense kernel, the matrix-free operator and the
sketch: one figure for the README.

Usage (from the repository root, alone on the machine)::

    OMP_WAIT_POLICY=PASSIVE .venv/bin/python benchmarks/bench_features_scaling.py [--threads 2]
        [--dense 1000 10000] [--operator 1000 10000] [--sketch 1000 10000 100000] [--nystrom 1000 10000 100000]
        [--ridge-scale 0.1]
        [--add results.json ...] [--out benchmarks/out/features_scaling.json] [--figure docs/features_scaling.png]

MNIST-1D (``features_data.mnist1d``: the 1.25 M-sample set, 10,000 test samples), the MLP 40-512-512-10 at
initialisation, float32, one-hot targets, ``λ = --ridge-scale · mean diag K``. Per N and method, one process
(``harness.run_worker`` on this file) times the whole regression from the inputs to the test
predictions, excluding data generation: ``dense`` forms ``K`` and ``K(x_test, X)`` with ``pntk.pntk`` and solves
by PCG (``pntk.solvers.ridge_regression``, relative residual 1e-6); ``operator`` gives the same PCG the
matrix-free ``pntk.operator``; ``sketch`` streams a ``k = 4096`` Kronecker sketch into ``FeatureRidge``, and
``nystrom`` the Nyström features of ``min(k, N)`` uniform landmarks (at ``N ≤ k`` exact regression again).
``--add`` merges points measured elsewhere (JSON lists of rows with ``method``, ``n``, ``seconds``,
``accuracy``). Nothing asserts a time.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import harness  # noqa: E402

GiB = 2**30
WORKER_ENV = "PNTK_SCALING_WORKER"  # set in the worker processes this script starts


def work(job: dict) -> dict:
    """One regression: ``job`` = ``{"method", "n", "n_test", "threads", "ridge_scale", "k"}``."""
    import numpy as np
    import torch

    import pntk
    from features_data import mlp, mnist1d, uniform_nystrom
    from pntk.solvers import SolverOptions, ridge_regression

    torch.set_num_threads(job["threads"])
    data = mnist1d(1250000)
    n, method = job["n"], job["method"]
    x, y = torch.from_numpy(data["x"][:n]), data["y"][:n]
    x_test, y_test = torch.from_numpy(data["x_test"][: job["n_test"]]), data["y_test"][: job["n_test"]]
    Y = torch.from_numpy(np.eye(10)[y])
    net = mlp()
    t0 = time.perf_counter()
    extra: dict = {}
    if method in ("sketch", "nystrom"):
        if method == "sketch":
            fmap = pntk.features.FeatureMap(net, k=job["k"], seed=0)
        else:  # at k ≥ N every sample is a landmark and the regression is exact
            fmap = uniform_nystrom(net, x, job["k"])
        ridge = pntk.features.FeatureRidge(0.0)
        for s in range(0, n, 4096):
            ridge.partial_fit(fmap(x[s : s + 4096]), Y[s : s + 4096])
        ridge.ridge = job["ridge_scale"] * ridge.mean_diagonal
        F = ridge.predict(fmap(x_test))
    else:
        if method == "dense":
            K, K_test = pntk.pntk(net, x), pntk.pntk(net, x_test, x)
        else:
            K, K_test = pntk.operator(net, x), pntk.operator(net, x_test, x)
        lam = job["ridge_scale"] * float(K.diagonal().double().mean())
        r = ridge_regression(K, K_test, Y, ridge=lam, options=SolverOptions(tol=1e-6, rank=500, maxiter=1000))
        F = r.predictions.numpy()
        extra = {"iterations": r.cg.iterations, "converged": bool(r.cg.converged)}
    seconds = time.perf_counter() - t0
    return {**job, **extra, "seconds": seconds, "accuracy": float((F.argmax(1) == y_test).mean())}


def figure(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.8))
    labels = {"sketch": "Kronecker sketch", "nystrom": "Nyström sketch"}
    for method, marker in (("dense", "s"), ("operator", "^"), ("sketch", "o"), ("nystrom", "D")):
        pts = sorted((r["n"], r["accuracy"], r["seconds"]) for r in rows if r["method"] == method and "accuracy" in r)
        if not pts:
            continue
        n, acc, sec = zip(*pts)
        left.semilogx(n, acc, marker=marker, label=labels.get(method, method))
        right.loglog(n, sec, marker=marker, label=labels.get(method, method))
    left.set_xlabel("N (training samples)")
    left.set_ylabel("test accuracy (10,000 samples)")
    right.set_xlabel("N (training samples)")
    right.set_ylabel("seconds, inputs to test predictions")
    right.axhline(600, color="k", ls=":", lw=0.8)
    for ax in (left, right):
        ax.legend(fontsize=8)
    loads = [float(r["load"]) for r in rows if str(r.get("load", "?")).replace(".", "", 1).isdigit()]
    fig.suptitle(
        "pNTK ridge regression, MLP 40-512-512-10, MNIST-1D, float32, 2 threads"
        + (f" (load average at start {min(loads):.1f}–{max(loads):.1f})" if loads else ""),
        fontsize=9,
    )
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)


def main() -> None:
    if os.environ.get(WORKER_ENV):
        harness.emit(work(harness.read_job()))
        return
    parser = argparse.ArgumentParser()
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--dense", type=int, nargs="*", default=[1000, 10000])
    parser.add_argument("--operator", type=int, nargs="*", default=[1000, 10000])
    parser.add_argument("--sketch", type=int, nargs="*", default=[1000, 10000, 100000])
    parser.add_argument("--nystrom", type=int, nargs="*", default=[1000, 10000, 100000])
    parser.add_argument("--ridge-scale", type=float, default=0.1)
    parser.add_argument("--k", type=int, default=4096)
    parser.add_argument("--add", type=Path, nargs="*", default=[])
    parser.add_argument("--out", type=Path, default=Path("benchmarks/out/features_scaling.json"))
    parser.add_argument("--figure", type=Path, default=Path("docs/features_scaling.png"))
    parser.add_argument("--plot-only", action="store_true")
    args = parser.parse_args()
    rows: list[dict] = json.loads(args.out.read_text()) if args.plot_only else []
    if not args.plot_only:
        for method in ("dense", "operator", "sketch", "nystrom"):
            for n in getattr(args, method):
                job = {"method": method, "n": n, "n_test": 10000, "threads": args.threads}
                job.update(ridge_scale=args.ridge_scale, k=args.k, load=harness.load_average())
                outcome = harness.run_worker(
                    sys.executable, Path(__file__), job, timeout_s=900, memory_cap_bytes=4 * GiB, env={WORKER_ENV: "1"}
                )
                row = {**job, **(outcome.result or {}), "status": outcome.status, "peak_rss": outcome.peak_rss_bytes}
                print(json.dumps(row), flush=True)
                rows.append(row)
        for extra in args.add:
            rows += json.loads(extra.read_text())
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(rows, indent=1))
    figure(rows, args.figure)


if __name__ == "__main__":
    main()
