"""Benchmark: the pNTK as a matrix-free operator on MNIST-1D with an MLP 40-512-512-10 (float32, 2 threads).

Measurements, each in its own process (so that its peak resident memory is its own):

- ``products``: time per product ``K V`` (1 and 16 columns) against N, for pntk's operator (cached structured
  factors; the time to prepare them reported apart), pntk's operator on NTK-vector products, the hand-written
  ``torch.func`` VJP/JVP product on identical weights, forming the pNTK (``pntk.pntk``) then multiplying, and
  a kernel store streamed from disk (``store``; computing the store is its set-up, reused when present);
- ``eig``: the top-10 eigenvalues by block Lanczos; ``regress``: ridge regression (λ = 1e-3 · mean diagonal)
  by Nyström-preconditioned CG to relative residual 1e-4, with test accuracy, for the pNTK or the exact eNTK;
- ``dense``: at an N where the dense kernel fits, iterative eigenvalues and PCG predictions against dense
  float64 ones, with the time of each.

The data: MNIST-1D's generator (``mnist1d.data.make_dataset``, offline) asked for 125,000 samples, split
80/20 by the generator (train N ≤ 100,000, test 25,000, of which the first 5,000 are predicted); generated
once and cached under ``/tmp``. Results are JSON; ``figure`` draws time and memory against N.

    .venv/bin/python benchmarks/bench_operators.py products --sizes 1000 10000 100000 --out results/ops.json
    .venv/bin/python benchmarks/bench_operators.py solve --N 100000 --out results/ops_solve.json
    .venv/bin/python benchmarks/bench_operators.py dense --N 10000 --out results/ops_dense.json
    .venv/bin/python benchmarks/bench_operators.py figure results/ops.json --out docs/operators.png

Never asserts a time. Timings on a shared machine are noisy: compare ratios from one run.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import harness  # noqa: E402

CACHE = Path("/tmp/pntk_bench_operators")
TOTAL = 125_000
WIDTH, OUTPUTS = 512, 10


# ------------------------------------------------------------------------------------------------ worker side


def mnist1d():
    """``(x [100000, 40], y, x_test [25000, 40], y_test)`` float32/int64, generated once and cached."""
    import numpy as np

    path = CACHE / f"mnist1d_{TOTAL}.npz"
    if not path.exists():
        from mnist1d.data import get_dataset_args, make_dataset

        args = get_dataset_args()
        args.num_samples = TOTAL
        data = make_dataset(args)
        CACHE.mkdir(parents=True, exist_ok=True)
        np.savez(path, x=data["x"], y=data["y"], x_test=data["x_test"], y_test=data["y_test"])
    d = np.load(path, allow_pickle=False)
    return (d["x"].astype(np.float32), d["y"], d["x_test"].astype(np.float32), d["y_test"])


def mlp():
    """The MLP 40-512-512-10 (ReLU), seed 0, eval mode, float32."""
    import torch

    torch.manual_seed(0)
    n = torch.nn
    return n.Sequential(
        n.Linear(40, WIDTH), n.ReLU(), n.Linear(WIDTH, WIDTH), n.ReLU(), n.Linear(WIDTH, OUTPUTS)
    ).eval()


def torch_func_product(model, x, V):
    """The hand-written ``torch.func`` pNTK product ``J_g (J_gᵀ v)`` per column, ``g = Σ_a f_a / √O``."""
    import torch
    from torch.func import functional_call, jvp, vjp

    params = {k: v.detach() for k, v in model.named_parameters()}

    def g(p):
        return functional_call(model, p, (x,)).sum(-1) / math.sqrt(OUTPUTS)

    out = []
    for j in range(V.shape[1]):
        _, pullback = vjp(g, params)
        (tangent,) = pullback(V[:, j])
        out.append(jvp(g, (params,), (tangent,))[1])
    return torch.stack(out, 1)


def worker() -> None:
    import copy

    import numpy as np
    import torch

    import pntk
    from pntk.solvers import SolverOptions, eigsh, ridge_regression

    job = harness.read_job()
    torch.set_num_threads(int(job.get("threads", 2)))
    x, y, x_test, y_test = mnist1d()
    N = int(job["N"])
    X = torch.from_numpy(x[:N])
    model = mlp()
    result: dict = {"job": job}
    task = job["task"]
    if task == "product":
        k, method = int(job["columns"]), job["method"]
        V = torch.from_numpy(np.random.default_rng(0).standard_normal((N, k)).astype(np.float32))
        t0 = time.perf_counter()
        if method in ("operator", "operator_vp"):
            op = pntk.operator(
                model, X, engine="structured" if method == "operator" else "vp", memory=job.get("memory")
            )
            fn = lambda: op @ V  # noqa: E731
            if method == "operator":
                op.diagonal()  # prepares (and caches) every chunk's factors: the set-up, timed apart
            result["cached"] = op.plan.cache
        elif method == "torch_func":
            fn = lambda: torch_func_product(model, X, V)  # noqa: E731
        elif method == "dense":
            K = pntk.pntk(model, X)
            fn = lambda: K @ V  # noqa: E731
        elif method == "store":
            path = CACHE / f"store_{N}.zarr"
            store = pntk.compute(model, X, kind="pntk", out=path, memory=job.get("memory") or "2GB")
            op = store.operator(memory=job.get("memory"))
            fn = lambda: op @ V  # noqa: E731
        else:
            raise ValueError(method)
        result["setup_s"] = time.perf_counter() - t0
        timing = harness.time_calls(
            fn, repeats=int(job.get("repeats", 3)), max_seconds=job.get("max_seconds", 60), first_compiles=False
        )
        result.update(first_s=timing.first_s, times_s=timing.times_s, median_s=timing.median_s)
        if job.get("save_product"):
            np.save(job["save_product"], fn().reshape(N, k).numpy())
    elif task == "eig":
        t0 = time.perf_counter()
        op = pntk.operator(model, X, kind=job.get("kind", "pntk"), memory=job.get("memory"))
        pairs = eigsh(op, int(job.get("k", 10)), options=SolverOptions(tol=float(job.get("eig_tol", 1e-6))))
        result.update(
            seconds=time.perf_counter() - t0,
            eigenvalues=pairs.eigenvalues.tolist(),
            relative_residuals=(pairs.residuals / pairs.eigenvalues[0]).tolist(),
            iterations=pairs.iterations,
            products=pairs.products,
            converged=pairs.converged,
            cached=op.plan.cache,
        )
    elif task == "regress":
        M = int(job.get("M", 5000))
        Xt = torch.from_numpy(x_test[:M])
        Y = torch.nn.functional.one_hot(torch.from_numpy(y[:N]), OUTPUTS).double()
        kind = job.get("kind", "pntk")
        t0 = time.perf_counter()
        op = pntk.operator(model, X, kind=kind, memory=job.get("memory"))
        cross = pntk.operator(model, Xt, X, kind=kind, memory=job.get("memory"))
        ridge = 1e-3 * op.diagonal().double().mean().item()
        options = SolverOptions(
            tol=float(job.get("tol", 1e-4)),
            rank=int(job.get("rank", 1000)),
            maxiter=int(job.get("maxiter", 1000)),
            preconditioner=job.get("preconditioner", "pivoted_cholesky"),
            progress=True,  # the iterations and residual on stderr: a run stopped by its timeout still tells them
        )
        exact = {}
        if job.get("exact_memory"):
            # Iterative refinement: residuals from the same kernel with float64 products (not cached: chunked
            # within their own budget), corrections from the float32 operator.
            m64 = copy.deepcopy(model).double()
            X64, Xt64 = X.double(), Xt.double()
            exact = dict(
                exact=pntk.operator(m64, X64, kind=kind, memory=job["exact_memory"]),
                exact_test=pntk.operator(m64, Xt64, X64, kind=kind, memory=job["exact_memory"]),
            )
        fit = ridge_regression(op, cross, Y, ridge=ridge, options=options, **exact)
        with torch.no_grad():
            network = (model(Xt).argmax(1).numpy() == y_test[:M]).mean()
        predictions = fit.predictions
        if job.get("save_predictions"):
            np.save(job["save_predictions"], predictions.numpy())
        result.update(
            seconds=time.perf_counter() - t0,
            ridge=ridge,
            iterations=fit.cg.iterations,
            residual=fit.cg.residual.max().item(),
            history=fit.cg.history.tolist(),
            converged=fit.cg.converged,
            refinements=fit.cg.refinements,
            products=fit.cg.products,
            cached=op.plan.cache,
            test_accuracy=float((predictions.argmax(1).numpy() == y_test[:M]).mean()),
            network_accuracy_at_these_weights=float(network),
        )
    elif task == "dense":
        result.update(
            dense_check(
                model,
                X,
                torch.from_numpy(x_test[:1000]),
                torch.from_numpy(y[:N]),
                rank=int(job.get("rank", 1000)),
                memory=job.get("memory"),
                float32_dense=bool(job.get("float32_dense", True)),
            )
        )
    else:
        raise ValueError(task)
    harness.emit(result)


def cholesky_solve(K, ridge: float, Y):
    """``(K + λI)⁻¹ Y`` by a float64 Cholesky factorisation of ``K`` (overwritten): ``[N, c]`` NumPy.

    torch's, since SciPy's ``cho_factor`` crashes (SIGSEGV) on a 20,000 × 20,000 matrix here.
    """
    import torch

    A = torch.from_numpy(K)
    A.diagonal().add_(ridge)
    torch.linalg.cholesky_ex(A, out=(A, torch.empty((), dtype=torch.int32)))
    return torch.cholesky_solve(Y.to(A.dtype), A).numpy()


def dense_check(model, X, Xt, y, *, rank: int, memory, float32_dense: bool) -> dict:
    """Iterative against dense at one N: top-10 eigenvalues and PCG ridge predictions, timed.

    "The dense solve" is the exact answer for the float32 network's weights: its pNTK formed in float64 (the
    model cast to float64 holds exactly the same numbers), eigenvalues by ARPACK to machine precision, the
    ridge system by Cholesky, predictions with the float64 cross kernel. Beside it, the float32 kernel (as
    ``pntk.pntk`` forms it for the float32 model) solved in float64: how far float32 rounding alone moves the
    answer. The operator path runs float32 products; eigenvalues with and without a float64 Rayleigh–Ritz
    step, the ridge system by PCG with iterative refinement against the float64 operator.
    """
    import copy

    import numpy as np
    import scipy.sparse.linalg
    import torch

    import pntk
    from pntk.solvers import SolverOptions, eigsh, pivoted_cholesky, ridge_regression

    out: dict = {"rank": rank}
    N = len(X)
    Y = torch.nn.functional.one_hot(y, OUTPUTS).double()
    m64 = copy.deepcopy(model).double()
    X64, Xt64 = X.double(), Xt.double()
    t0 = time.perf_counter()
    K = pntk.pntk(m64, X64, memory=memory).numpy()
    K_test = pntk.pntk(m64, Xt64, X64, memory=memory).numpy()
    out["dense_form_s"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    dense_eig = scipy.sparse.linalg.eigsh(K, k=10, which="LA", tol=0, return_eigenvectors=False)[::-1]
    out["dense_eig_s"] = time.perf_counter() - t0
    ridge = 1e-3 * K.diagonal().mean()
    t0 = time.perf_counter()
    dense_pred = K_test @ cholesky_solve(K, ridge, Y)
    out["dense_solve_s"] = time.perf_counter() - t0
    del K

    def rel(pred) -> float:
        return float(np.linalg.norm(pred - dense_pred) / np.linalg.norm(dense_pred))

    if float32_dense:
        K = np.empty((N, N))
        for s in range(0, N, 2000):  # row blocks, so that the float32 and float64 copies are never both whole
            K[s : s + 2000] = pntk.pntk(model, X[s : s + 2000], X, memory=memory).double().numpy()
        K_test32 = pntk.pntk(model, Xt, X, memory=memory).double().numpy()
        out["float32_kernel_prediction_relative_error"] = rel(K_test32 @ cholesky_solve(K, ridge, Y))
        del K
    harness.emit(dict(out))  # the dense half, should the iterative half be killed

    op = pntk.operator(model, X, memory=memory)
    op64 = pntk.operator(m64, X64, memory=memory)
    eig_options = SolverOptions(tol=1e-6)
    for name, exact in (("float32", None), ("refined", op64)):
        t0 = time.perf_counter()
        pairs = eigsh(op, 10, options=eig_options, exact=exact)
        out[f"iterative_eig_{name}_s"] = time.perf_counter() - t0
        out[f"eig_{name}_max_relative_error"] = float(np.max(np.abs(pairs.eigenvalues.numpy() - dense_eig) / dense_eig))
        out[f"lanczos_{name}_products"] = pairs.products
        harness.emit(dict(out))
    t0 = time.perf_counter()
    M = pivoted_cholesky(op, rank, ridge)
    out["preconditioner_s"] = time.perf_counter() - t0
    harness.emit(dict(out))
    t0 = time.perf_counter()
    fit = ridge_regression(
        op,
        pntk.operator(model, Xt, X, memory=memory),
        Y,
        ridge=ridge,
        options=SolverOptions(tol=1e-7),
        preconditioner=M,
        exact=op64,
        exact_test=pntk.operator(m64, Xt64, X64, memory=memory),
    )
    out["iterative_solve_s"] = time.perf_counter() - t0
    out.update(
        prediction_relative_error=rel(fit.predictions.numpy()),
        cg_iterations=fit.cg.iterations,
        cg_refinements=fit.cg.refinements,
        cg_residual=fit.cg.residual.max().item(),
        cg_history=fit.cg.history.tolist(),
        eigenvalues=dense_eig.tolist(),
        ridge=float(ridge),
    )
    return out


# ------------------------------------------------------------------------------------------------ parent side


def run(job: dict, *, timeout_s: float, memory_gib: float) -> dict:
    # Idle OpenMP threads sleep instead of spinning: on a machine shared with other jobs, spinning threads of a
    # 2-thread torch wait for a descheduled partner at every small matmul (a product at N = 10,000 took 1.55 s
    # spinning, 0.16 s passive, 0.13 s on one thread).
    outcome = harness.run_worker(
        sys.executable,
        __file__,
        {**job, "worker": True},
        timeout_s=timeout_s,
        memory_cap_bytes=int(memory_gib * 2**30),
        env={"OMP_WAIT_POLICY": "PASSIVE"},
    )
    row = {"job": job, "status": outcome.status, "detail": outcome.detail, "peak_rss_bytes": outcome.peak_rss_bytes}
    if outcome.result:
        row.update({k: v for k, v in outcome.result.items() if k != "job"})
    print(json.dumps({k: v for k, v in row.items() if k != "history"}), flush=True)
    return row


def nt_weights() -> Path:
    """The MLP's parameters and the inputs, for the neural-tangents twin (identical weights)."""
    import numpy as np

    import models

    path = CACHE / "nt_weights.npz"
    if not path.exists():
        x = mnist1d()[0]
        np.savez(path, *models.torch_param_arrays(mlp()), x=x)
    return path


def run_nt(job: dict, *, python: str, timeout_s: float, memory_gib: float) -> dict:
    """One neural-tangents measurement in its own process (the ``.venv-nt`` environment)."""
    worker = Path(__file__).resolve().parent / "nt_products_worker.py"
    outcome = harness.run_worker(python, worker, job, timeout_s=timeout_s, memory_cap_bytes=int(memory_gib * 2**30))
    row = {"job": job, "status": outcome.status, "detail": outcome.detail, "peak_rss_bytes": outcome.peak_rss_bytes}
    if outcome.result:
        row.update(outcome.result)
    print(json.dumps(row), flush=True)
    return row


def products(args) -> list[dict]:
    rows = []
    for N in args.sizes:
        for k in args.columns:
            for method in args.methods:
                if method in ("dense", "store") and N > args.dense_max:
                    continue
                save = str(CACHE / f"product_{method}_{N}_{k}.npy") if args.save_products else None
                if method.startswith("nt"):
                    if (k == 1) != (method == "nt"):
                        continue
                    job = {
                        "task": "product",
                        "N": N,
                        "columns": k,
                        "method": method,
                        "mode": method.removeprefix("nt_") or "vmap",
                        "load": str(nt_weights()),
                        "repeats": args.repeats,
                        "save_product": save,
                    }
                    rows.append(run_nt(job, python=args.nt_python, timeout_s=args.timeout, memory_gib=args.memory_cap))
                    write(args, rows)
                    continue
                job = {
                    "task": "product",
                    "N": N,
                    "columns": k,
                    "method": method,
                    "memory": args.memory,
                    "repeats": args.repeats,
                    "threads": args.threads,
                    "save_product": save,
                }
                rows.append(run(job, timeout_s=args.timeout, memory_gib=args.memory_cap))
                write(args, rows)
    return rows


def write(args, rows: list[dict], meta: dict | None = None) -> None:
    """The rows so far to ``args.out`` (after every measurement, so that a killed run loses nothing)."""
    meta = meta or {"load_average": harness.load_average(), "written": time.strftime("%Y-%m-%dT%H:%M:%S")}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({"meta": meta, "rows": rows}, indent=1))


def main() -> None:
    if "--worker" in sys.argv or (len(sys.argv) == 1 and not sys.stdin.isatty()):
        worker()
        return
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="command", required=True)
    pp = sub.add_parser("products")
    pp.add_argument("--sizes", type=int, nargs="+", default=[1000, 10000, 100000])
    pp.add_argument("--columns", type=int, nargs="+", default=[1, 16])
    pp.add_argument(
        "--methods",
        nargs="+",
        default=["operator", "torch_func", "operator_vp", "dense", "store", "nt", "nt_vmap"],
        help="nt: neural-tangents, one column; nt_vmap / nt_loop: its k columns by jax.vmap or a loop",
    )
    pp.add_argument("--dense-max", type=int, default=20000)
    pp.add_argument("--repeats", type=int, default=3)
    pp.add_argument("--nt-python", default=".venv-nt/bin/python", help="the neural-tangents environment's python")
    pp.add_argument("--save-products", action="store_true", help="keep each product (.npy) for a cross-check")
    ps = sub.add_parser("solve")
    ps.add_argument("--N", type=int, default=100000)
    ps.add_argument("--tasks", nargs="+", default=["eig", "regress"])
    ps.add_argument("--kind", default="pntk")
    ps.add_argument("--rank", type=int, default=1000, help="of the preconditioner")
    ps.add_argument("--preconditioner", default="pivoted_cholesky")
    ps.add_argument("--maxiter", type=int, default=1000, help="CG iterations")
    ps.add_argument("--tol", type=float, default=1e-4, help="CG relative residual")
    ps.add_argument("--eig-tol", type=float, default=1e-6, help="Lanczos residual relative to λ_max")
    ps.add_argument("--M", type=int, default=5000, help="test samples predicted")
    ps.add_argument("--save-predictions", help=".npy file for the test predictions [M, O]")
    ps.add_argument(
        "--exact-memory", help="refine to float64: residuals from a float64 operator with this budget (e.g. 300MB)"
    )
    pd = sub.add_parser("dense")
    pd.add_argument("--N", type=int, default=20000)
    pd.add_argument("--rank", type=int, default=4000, help="of the pivoted-Cholesky preconditioner")
    pd.add_argument("--no-float32-dense", action="store_true", help="skip the float32 kernel's dense solve")
    pf = sub.add_parser("figure")
    pf.add_argument("inputs", nargs="+")
    for q in (pp, ps, pd):
        q.add_argument("--memory", default="2GB", help="the operator's budget")
        q.add_argument("--threads", type=int, default=2)
        q.add_argument("--timeout", type=float, default=1800)
        q.add_argument("--memory-cap", type=float, default=8.0, help="GiB; a worker past it is killed")
    p.add_argument("--out", required=True)
    args = p.parse_args()
    if args.command == "figure":
        figure(args.inputs, args.out)
        return
    meta = {"load_average": harness.load_average(), "started": time.strftime("%Y-%m-%dT%H:%M:%S")}
    if args.command == "products":
        rows = products(args)
    elif args.command == "solve":
        rows = []
        for t in args.tasks:
            rows.append(
                run(
                    {
                        "task": t,
                        "N": args.N,
                        "kind": args.kind,
                        "memory": args.memory,
                        "threads": args.threads,
                        "rank": args.rank,
                        "preconditioner": args.preconditioner,
                        "maxiter": args.maxiter,
                        "tol": args.tol,
                        "eig_tol": args.eig_tol,
                        "M": args.M,
                        "save_predictions": args.save_predictions,
                        "exact_memory": args.exact_memory,
                    },
                    timeout_s=args.timeout,
                    memory_gib=args.memory_cap,
                )
            )
            write(args, rows, meta)
    else:
        rows = [
            run(
                {
                    "task": "dense",
                    "N": args.N,
                    "threads": args.threads,
                    "rank": args.rank,
                    "memory": args.memory,
                    "float32_dense": not args.no_float32_dense,
                },
                timeout_s=args.timeout,
                memory_gib=args.memory_cap,
            )
        ]
    meta["finished"] = time.strftime("%Y-%m-%dT%H:%M:%S")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({"meta": meta, "rows": rows}, indent=1))


def figure(inputs: list[str], out: str) -> None:
    """Time per product and peak memory against N, one line per method and column count."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for path in inputs for r in json.loads(Path(path).read_text())["rows"] if r["job"]["task"] == "product"]
    fig, (ax_t, ax_m) = plt.subplots(1, 2, figsize=(10, 4))
    labels = {
        "operator": "pntk operator (cached factors)",
        "operator_vp": "pntk operator (vjp/jvp)",
        "torch_func": "torch.func vjp/jvp snippet",
        "dense": "dense pNTK: form + multiply",
        "store": "store: stream tiles",
        "nt": "neural-tangents empirical_ntk_vp_fn (jit)",
        "nt_vmap": "neural-tangents, vmap over columns",
        "nt_loop": "neural-tangents, loop over columns",
    }
    colors = {m: f"C{i}" for i, m in enumerate(labels)}
    threads = sorted({r["job"].get("threads", 2) for r in rows})
    for method, k in sorted({(r["job"]["method"], r["job"]["columns"]) for r in rows}):
        pts = sorted(
            (r["job"]["N"], r)
            for r in rows
            if (r["job"]["method"], r["job"]["columns"]) == (method, k) and r["status"] == "ok"
        )
        if not pts:
            continue
        N = [n for n, _ in pts]
        seconds = [r["median_s"] + (r["setup_s"] if method == "dense" else 0.0) for _, r in pts]
        line = "-" if k == 1 else "--"
        style = {"color": colors.get(method), "marker": "o", "label": f"{labels.get(method, method)}, {k} col."}
        ax_t.loglog(N, seconds, line, **style)
        ax_m.loglog(N, [r["peak_rss_bytes"] / 1e9 for _, r in pts], line, **style)
    ax_t.set(xlabel="N", ylabel="seconds per product (dense: incl. forming K)", title="time")
    ax_m.set(xlabel="N", ylabel="peak RSS (GB)", title="memory")
    ax_t.legend(fontsize=7)
    fig.suptitle(
        f"pNTK products, MLP 40-512-512-10 on MNIST-1D, float32, {'/'.join(map(str, threads))} thread(s), "
        "shared machine under load",
        fontsize=9,
    )
    fig.tight_layout()
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=120)


if __name__ == "__main__":
    main()
