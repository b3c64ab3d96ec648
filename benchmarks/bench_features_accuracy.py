"""How close k-dimensional sketches come to exact pNTK ridge regression at N = 20,000, and why not closer.

Usage (from the repository root, alone on the machine: it holds a 1.6 GB kernel)::

    OMP_WAIT_POLICY=PASSIVE .venv/bin/python benchmarks/bench_features_accuracy.py \\
        [--n 20000] [--ks 1024 2048 4096] [--threads 2] [--scales 1e-3 1e-2 1e-1] [--spectrum] \\
        [--methods kronecker-8x8 nystrom-uniform nystrom-rpcholesky] [--out benchmarks/out/features_accuracy.json] \\
        [--oracle 1024 2048 4096 8192 20000] [--figure docs/features_accuracy.png]   # or --plot-only, from the JSON of --out

MNIST-1D (``features_data.mnist1d``, 25,000 samples: 20,000 train, 5,000 test), the MLP 40-512-512-10 at
initialisation, float32. At N = ``--n``: the exact pNTK ``K`` (float32) and its ridge regression (PCG to a
relative residual of 1e-6) for ``λ = scale · mean diag K``, beside the same regression on ``k`` features for each
``k`` of ``--ks`` and each method:

- ``kronecker-CxC``: the Kronecker projection with ``C × C`` blocks (``pntk.features``, the default method);
- ``nystrom-uniform``: Nyström with ``k`` landmarks drawn uniformly (``method="nystrom"``);
- ``nystrom-rpcholesky``: Nyström with ``k`` landmarks drawn by randomly pivoted Cholesky
  (``landmarks="rpcholesky"``);
- ``nystrom-rpcholesky-topF``: ``F·k`` landmarks by randomly pivoted Cholesky, then the top ``k``
  eigen-directions of that Nyström approximation (``k`` features from a better rank-``k`` approximation).

For each: ``‖Φ Φᵀ − K‖_F / ‖K‖_F``, the trace kept, the top eigenvalues, the effective dimension
``Σ μ_i / (μ_i + λ)`` of the features, and test accuracy at the same ``λ`` as exact regression and over a wider
grid of ``λ`` (the grid's best is chosen on the test set, which flatters the sketch: an upper bound on what a
held-out choice would give). With ``--spectrum``, the exact eigenvalues of ``K`` (float32, at the end): its
effective dimension at each ``λ`` and the trace beyond its ``k``-th eigenvalue, the least any rank-``k`` sketch
can lose. With ``--oracle``, the best rank-``k`` approximation itself: the exact eigendecomposition of ``K``
(float64) and ridge regression on its top ``k`` eigen-directions, ``f(x) = K(x, X) U_k (Λ_k + λ)⁻¹ U_kᵀ Y``
(Nyström with every training sample a landmark, truncated to rank ``k``): the accuracy no rank-``k`` sketch
built from these samples is expected to pass; at ``k = N`` it is exact regression. Prints JSON lines and a
final JSON record.
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
from pntk.kernels.inputs import Inputs  # noqa: E402
from pntk.solvers import SolverOptions, ridge_regression  # noqa: E402

GRID = [1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2, 1e-1, 3e-1, 1.0]


def relative_error(Phi: torch.Tensor, K: torch.Tensor) -> float:
    """``‖Φ Φᵀ − K‖_F / ‖K‖_F``, by row blocks."""
    err2 = sum(
        float((Phi[s : s + 1000] @ Phi.T - K[s : s + 1000]).double().square().sum()) for s in range(0, len(K), 1000)
    )
    return math.sqrt(err2) / float(K.double().norm())


def sketch(method: str, net, x, x_test, k: int) -> tuple[torch.Tensor, torch.Tensor, dict]:
    """``Φ(x)``, ``Φ(x_test)`` and the seconds of each stage for one method at ``k``."""
    times: dict = {}
    t0 = time.perf_counter()
    if method.startswith("kronecker"):
        c = int(method.split("-")[1].split("x")[0])
        fmap = pntk.features.FeatureMap(net, k=k, seed=0, block=(c, c))
        Phi, Phi_test = fmap(x), fmap(x_test)
    elif method == "nystrom-uniform":
        nys = pntk.features.Nystrom(net, pntk.features.Nystrom.choose_landmarks(Inputs.from_user(x, "x"), k, 0))
        Phi, Phi_test = nys(x), nys(x_test)
    elif method.startswith("nystrom-rpcholesky"):
        factor = int(method.split("-top")[1]) if "-top" in method else 1
        index = pntk.features.rpcholesky_landmarks(net, x, factor * k, seed=0)
        times["landmarks_s"] = time.perf_counter() - t0
        nys = pntk.features.Nystrom(net, x[index])
        Phi, Phi_test = nys(x), nys(x_test)
        if factor > 1:  # the top k eigen-directions of the Nyström approximation Φ Φᵀ
            times["all_landmarks"] = (Phi, Phi_test)
            G = sum(Phi[s : s + 2000].double().T @ Phi[s : s + 2000].double() for s in range(0, len(Phi), 2000))
            V = torch.linalg.eigh(G)[1][:, -k:].flip(-1).to(Phi.dtype)
            Phi, Phi_test = Phi @ V, Phi_test @ V
    else:
        raise ValueError(f"unknown method {method!r}")
    times["seconds"] = time.perf_counter() - t0
    return Phi, Phi_test, times


def accuracies(Phi: torch.Tensor, Phi_test: torch.Tensor, Y: torch.Tensor, y_test, lams: list[float]) -> list[float]:
    """Test accuracy of ridge regression on the features, for each ``λ`` of ``lams``."""
    path = pntk.features.FeatureRidge().fit(Phi, Y).predict_path(Phi_test, lams)
    return [float((F.argmax(1) == y_test).mean()) for F in path]


def oracle(net, K: torch.Tensor, x, x_test, Y: torch.Tensor, y_test, ks: list[int], lams: list[float]) -> dict:
    """Test accuracy of ridge regression on the top ``k`` eigen-directions of the exact ``K`` for each ``k`` of
    ``ks`` and ``λ`` of ``lams``: ``f(x) = K(x, X) U_k (Λ_k + λ)⁻¹ U_kᵀ Y``. ``K`` is consumed (its memory is the
    float64 copy's workspace)."""
    import scipy.linalg

    t0 = time.perf_counter()
    K_test = pntk.pntk(net, x_test, x).double().numpy()
    K64 = K.double().numpy()
    lam, U = scipy.linalg.eigh(K64, overwrite_a=True, check_finite=False, driver="evr")
    del K64
    lam, U = lam[::-1].copy(), np.ascontiguousarray(U[:, ::-1])
    seconds = time.perf_counter() - t0
    UtY = U.T @ Y.numpy()
    projected = K_test @ U  # [n_test, N]: the test inputs' coordinates on every eigen-direction
    del U
    out: dict = {"eigh_s": seconds, "lambdas": lams, "accuracy": {}}
    for k in sorted(set(min(k, len(lam)) for k in ks)):
        row = []
        for lam_ridge in lams:
            F = projected[:, :k] @ (UtY[:k] / (lam[:k] + lam_ridge)[:, None])
            row.append(float((F.argmax(1) == y_test).mean()))
        out["accuracy"][str(k)] = row
        print(json.dumps({"oracle_k": k, "accuracy": row}), flush=True)
    return out


def figure(result: dict, path: Path) -> None:
    """Test accuracy (the best over the λ grid) and the trace lost against ``k`` for each method, beside exact
    regression and, with the spectrum, the least trace any rank-``k`` sketch loses."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.8))
    best: dict[str, dict[int, float]] = {}
    for r in result["sketches"]:
        best.setdefault(r["method"], {})[r["k"]] = r["best_on_grid"]
        if "all_landmarks_accuracy_grid" in r:  # 2k RPCholesky landmarks: the plain method at 2k
            best.setdefault("nystrom-rpcholesky", {})[2 * r["k"]] = max(r["all_landmarks_accuracy_grid"].values())
    for i, (method, points) in enumerate(best.items()):
        style = {"marker": "o", "label": method, "color": f"C{i}", "base": 2}
        left.semilogx(*zip(*sorted(points.items())), **style)
        rows = sorted((r for r in result["sketches"] if r["method"] == method), key=lambda r: r["k"])
        if not method.startswith("kronecker"):  # a random projection's trace is unbiased, not lost
            right.loglog([r["k"] for r in rows], [1 - r["trace_ratio"] for r in rows], **style)
    if result["exact"]:
        best = max(v["accuracy"] for v in result["exact"].values())
        left.axhline(best, color="k", lw=0.8, label="exact (best of its λ)")
        left.axhline(best - 0.01, color="k", ls=":", lw=0.8, label="exact − 1 point")
    if "spectrum" in result:
        tail = sorted((int(k), v) for k, v in result["spectrum"]["trace_beyond_k"].items())
        right.loglog(*zip(*tail), color="k", ls="--", label="best rank k (exact spectrum)", base=2)
    left.set_xlabel("k (features)")
    left.set_ylabel(f"test accuracy ({result['n_test']:,} samples), best λ")
    right.set_xlabel("k (features)")
    right.set_ylabel("Nyström: trace lost, 1 − tr ΦΦᵀ / tr K")
    for ax in (left, right):
        ax.legend(fontsize=7)
    fig.suptitle(
        f"pNTK sketches at N = {result['n']:,}: MLP 40-512-512-10, MNIST-1D, float32, 2 threads (machine under load)",
        fontsize=9,
    )
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=20000)
    parser.add_argument("--n-test", type=int, default=5000)
    parser.add_argument("--ks", type=int, nargs="+", default=[1024, 2048, 4096])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--scales", type=float, nargs="+", default=[1e-3, 1e-2, 1e-1])
    parser.add_argument("--methods", nargs="*", default=["kronecker-8x8", "nystrom-uniform", "nystrom-rpcholesky"])
    parser.add_argument("--spectrum", action="store_true", help="the exact eigenvalues of K at the end")
    parser.add_argument(
        "--oracle", type=int, nargs="*", help="ranks k of the exact top-k eigen-directions' regression (float64 eigh)"
    )
    parser.add_argument("--out", type=Path)
    parser.add_argument("--no-exact", dest="exact", action="store_false", help="skip the exact regressions")
    parser.add_argument("--figure", type=Path, help="draw the figure here (docs/features_accuracy.png)")
    parser.add_argument("--plot-only", action="store_true", help="only draw --figure from the JSON of --out")
    args = parser.parse_args()
    if args.plot_only:
        figure(json.loads(args.out.read_text()), args.figure)
        return
    torch.set_num_threads(args.threads)
    data = mnist1d(25000)
    n = args.n
    x, y = torch.from_numpy(data["x"][:n]), data["y"][:n]
    x_test, y_test = torch.from_numpy(data["x_test"][: args.n_test]), data["y_test"][: args.n_test]
    Y = torch.from_numpy(np.eye(10)[y])
    net = mlp()
    result: dict = {"n": n, "n_test": len(y_test), "ks": args.ks, "threads": args.threads}
    result["load_start"] = harness.load_average()
    t0 = time.perf_counter()
    K = pntk.pntk(net, x)
    result["exact_kernel_s"] = time.perf_counter() - t0
    scale = float(K.diagonal().double().mean())
    trace = float(K.diagonal().double().sum())
    print(json.dumps({"exact_kernel_s": result["exact_kernel_s"], "mean_diag": scale}), flush=True)
    lam_exact = np.asarray(extreme_eigenvalues(K, 10))
    result["exact_top_eigenvalues"] = [float(v) for v in lam_exact]
    result["exact"] = {}
    if args.exact:
        K_test = pntk.pntk(net, x_test, x)
        for s in args.scales:
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
        del K_test
    result["sketches"] = []
    for k in args.ks:
        for method in args.methods:
            Phi, Phi_test, times = sketch(method, net, x, x_test, k)
            mu = pntk.features.FeatureKernel(Phi).eigenvalues().numpy()
            grid = sorted(set(GRID) | set(args.scales))
            lams = [s * scale for s in grid]
            accuracy = dict(zip(map(str, grid), accuracies(Phi, Phi_test, Y, y_test, lams)))
            if "all_landmarks" in times:  # the same landmarks' features before keeping k of them
                all_landmarks = accuracies(*times.pop("all_landmarks"), Y, y_test, lams)
                times["all_landmarks_accuracy_grid"] = dict(zip(map(str, grid), all_landmarks))
            row = {
                "method": method,
                "k": k,
                "features": int(Phi.shape[1]),
                **times,
                "relative_error": relative_error(Phi, K),
                "trace_ratio": float(mu.sum() / trace),
                "top_eigenvalues": mu[:10].tolist(),
                "top_eigenvalue_relative_error": float(np.abs(mu[:10] - lam_exact).max() / lam_exact[0]),
                "accuracy": {str(s): accuracy[str(s)] for s in args.scales},
                "accuracy_grid": accuracy,
                "best_on_grid": max(accuracy.values()),
                "effective_dimension": {str(s): float((mu / (mu + s * scale)).sum()) for s in args.scales},
            }
            print(json.dumps(row), flush=True)
            result["sketches"].append(row)
            del Phi, Phi_test
    result["peak_rss"] = harness.peak_rss_bytes()
    result["load_end"] = harness.load_average()
    if args.oracle:
        result["oracle"] = oracle(net, K, x, x_test, Y, y_test, args.oracle, [s * scale for s in GRID])
        print(json.dumps({"oracle": result["oracle"]}), flush=True)
    if args.spectrum:
        import scipy.linalg

        t0 = time.perf_counter()
        # In place on K's memory (K is symmetric, so its transposed view is the Fortran-ordered matrix).
        lam = scipy.linalg.eigh(K.numpy().T, eigvals_only=True, overwrite_a=True, check_finite=False, driver="evd")
        del K
        lam = np.sort(lam.astype(np.float64))[::-1]
        tail = trace - np.cumsum(lam)
        result["spectrum"] = {
            "seconds": time.perf_counter() - t0,
            "effective_dimension": {str(s): float((lam / (lam + s * scale)).clip(min=0).sum()) for s in GRID},
            "trace_beyond_k": {str(k): float(tail[k - 1] / trace) for k in (*args.ks, 8192, 12000, 16000) if k <= n},
            "eigenvalue_k": {str(k): float(lam[k - 1]) for k in (*args.ks, 8192, 12000, 16000) if k <= n},
        }
        print(json.dumps({"spectrum": result["spectrum"]}), flush=True)
    print(json.dumps(result))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=2))
    if args.figure:
        figure(result, args.figure)


if __name__ == "__main__":
    main()
