"""Kernel timings: pntk's engines against the torch.func snippet and neural-tangents, in one run.

Usage (from the repository root)::

    .venv/bin/python benchmarks/bench_kernels.py [--workloads mlp,convnet,resnet18-16,resnet18-64,wrn]
        [--N 256,1024,4096] [--kinds pntk,trace,entk] [--repeats 3] [--quick]
        [--out benchmarks/out/kernels.json] [--nt-venv .venv-nt]

neural-tangents runs in its own virtual environment (JAX is not a pntk dependency); make it once with
``benchmarks/nt-venv.sh .venv-nt`` (or pass ``--nt-venv DIR`` to use another).

Every measurement runs in a fresh subprocess (``torch_worker.py`` or ``nt_worker.py``) with a wall-time
limit and a resident-memory cap, and reports the median of ``--repeats`` calls after a warm-up; JAX
compilation is reported apart from the steady-state time. Combinations whose estimated time or memory
exceeds the caps are skipped (the estimate comes from a FLOP count, or from the same implementation's
time at a smaller ``N`` scaled by ``N²``). Each row also gives the roofline floor: the FLOPs no method can
avoid (see :func:`floor_flops`) at this machine's measured float32 matmul rate.

Nothing here asserts a time. Times on a shared 2-core machine are noisy; the ratios measured in one run
are the numbers to read.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import os
import platform
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np  # noqa: E402

import harness  # noqa: E402
import models  # noqa: E402
from harness import fmt_bytes, fmt_ratio, fmt_seconds  # noqa: E402

NT_IMPLEMENTATIONS = ("jacobian_contraction", "ntk_vector_products", "structured_derivatives")
KINDS = ("pntk", "trace", "entk")
FLOAT_BYTES = 4

#: Fraction of the matmul rate assumed when a FLOP count predicts a time (to decide what to skip).
ASSUMED_EFFICIENCY = 0.25


# ------------------------------------------------------------------------------------------------ costs


@dataclass(frozen=True)
class Costs:
    """What the cost model needs to know of a network."""

    P: int
    O: int
    forward_flops: int  # one sample
    activations: int  # numbers one sample's forward pass produces
    layers: tuple[models.LayerShape, ...]

    @staticmethod
    def of(wl: models.Workload) -> Costs:
        import torch

        with torch.random.fork_rng(devices=[]):
            model = models.build_torch(wl)
        layers, activations = models.layer_shapes(model, wl.in_shape)
        return Costs(
            P=models.num_params(model),
            O=wl.num_outputs,
            forward_flops=sum(layer.forward_flops for layer in layers),
            activations=activations,
            layers=tuple(layers),
        )

    def cotangents(self, kind: str) -> int:
        """Backward passes per sample: 1 for the pNTK, ``O`` otherwise."""
        return 1 if kind == "pntk" else self.O

    def output_pairs(self, kind: str) -> int:
        """Output pairs ``(a, b)`` per sample pair that a kind needs: 1, ``O`` (trace), ``O²`` (eNTK)."""
        return {"pntk": 1, "trace": self.O, "entk": self.O**2}[kind]

    def kernel_bytes(self, kind: str, N: int) -> int:
        return N * N * (self.O**2 if kind == "entk" else 1) * FLOAT_BYTES


def floor_flops(c: Costs, kind: str, N: int) -> dict[str, float]:
    """The FLOPs a kernel of ``N × N`` samples (``x2 = x1``) cannot avoid, by part.

    - ``forward``: one forward pass per sample;
    - ``backward``: one backward pass of activation cotangents per output direction (1 for the pNTK, ``O``
      for eNTK and trace), each about one forward pass of matmul FLOPs (the summed weight gradient is
      never needed);
    - ``gram``: per layer ``z_t = W a_t + b`` at ``T`` positions (``a ∈ R^n``, ``z ∈ R^m``), over the
      ``N(N+1)/2`` distinct pairs and the kind's output pairs ``q`` (1, ``O`` or ``O²``), the cheaper of the
      factored Gram ``Σ_tu (A A'ᵀ)_tu (D D'ᵀ)_tu`` (``2T²n`` + ``q · 2T²m`` per pair, bias ``q · 2m``) and
      the materialised per-sample gradients ``Dᵀ A`` (``2Tnm`` per sample and cotangent, then
      ``q · 2(nm + m)`` per pair).

    Pooling, activations and writing the output are left out, so the floor is optimistic.
    """
    cot, q = c.cotangents(kind), c.output_pairs(kind)
    pairs = N * (N + 1) / 2
    gram = 0.0
    for layer in c.layers:
        T, n, m, b = layer.T, layer.n, layer.m, layer.bias
        factored = pairs * (2 * T * T * n + q * 2 * T * T * m + (q * 2 * m if b else 0))
        materialised = N * cot * 2 * T * n * m + pairs * q * 2 * (n * m + (m if b else 0))
        gram += min(factored, materialised)
    forward = N * c.forward_flops
    backward = cot * N * c.forward_flops
    return {"forward": forward, "backward": backward, "gram": gram, "total": forward + backward + gram}


def estimate(impl: str, c: Costs, kind: str, N: int) -> tuple[float, int]:
    """A rough lower bound on the FLOPs of ``impl``, and the memory it needs without tiling, in bytes.

    Jacobian contraction: per-sample Jacobians (``c`` backward passes and ``c · Σ 2Tnm`` to form them)
    then ``q · 2P`` per pair (all ``N²`` pairs, half for pntk, which mirrors). Vector products: ``N · c``
    columns of a ``vjp`` and a ``jvp`` over ``N`` samples. Structured: the floor. The memory of
    neural-tangents' methods is for the whole kernel in one call (the worker tiles with ``nt.batch``
    when it does not fit).
    """
    cot, q = c.cotangents(kind), c.output_pairs(kind)
    out = c.kernel_bytes(kind, N)
    per_sample_jac = cot * c.P * FLOAT_BYTES
    form = N * cot * sum(layer.forward_flops for layer in c.layers)
    jac = N * (1 + cot) * c.forward_flops + form
    if impl in ("torch.func", "nt:jacobian_contraction", "pntk:jacobian"):
        pairs = N * (N + 1) / 2 if impl.startswith("pntk") else N * N
        flops = jac + pairs * q * 2 * c.P
        if impl == "nt:jacobian_contraction":
            return flops, 2 * N * per_sample_jac + out
        if impl == "torch.func":
            return flops, N * per_sample_jac + out
        return flops, out
    if impl in ("pntk:vp", "nt:ntk_vector_products"):
        flops = cot * N * N * 2 * c.forward_flops
        if impl.startswith("pntk"):
            return flops / 2, out
        return flops, N * cot * (c.P + N * c.activations) * FLOAT_BYTES + out
    if impl in ("pntk:structured", "nt:structured_derivatives"):
        flops = floor_flops(c, kind, N)["total"]
        if impl.startswith("pntk"):
            return flops, out
        # per-sample layer inputs and cotangents, and one T × T Gram per pair for the widest layer
        factors = N * (1 + cot) * c.activations * FLOAT_BYTES
        grams = N * N * max(layer.T for layer in c.layers) ** 2 * FLOAT_BYTES
        return flops, factors + grams + out
    if impl == "pntk:auto":
        engines = ("pntk:jacobian", "pntk:vp", "pntk:structured")
        return min(estimate(e, c, kind, N)[0] for e in engines), out
    return floor_flops(c, kind, N)["total"], out


def predict_seconds(
    impl: str, c: Costs, kind: str, N: int, history: list[tuple[str, int, float]], rate_gflops: float
) -> float:
    """The expected seconds of one call, to decide what to skip.

    From the same implementation's last time for this kind at a smaller ``N``, or (except for ``auto``,
    which may change engine with the kind) for another kind, scaled by the ratio of :func:`estimate`'s
    FLOP counts (about ``N²`` for Jacobian contraction and vector products, closer to ``N`` for the
    structured methods at moderate ``N``); else :func:`estimate` at :data:`ASSUMED_EFFICIENCY` of the
    matmul rate.
    """
    same = [(n, t) for k, n, t in history if k == kind]
    if same:
        n0, t0 = same[-1]
        return t0 * estimate(impl, c, kind, N)[0] / estimate(impl, c, kind, n0)[0]
    if history and impl != "pntk:auto":
        k0, n0, t0 = history[-1]
        return t0 * estimate(impl, c, kind, N)[0] / estimate(impl, c, k0, n0)[0]
    return estimate(impl, c, kind, N)[0] / (rate_gflops * 1e9 * ASSUMED_EFFICIENCY)


def nt_batch_size(impl: str, c: Costs, kind: str, N: int, budget: float) -> int | None:
    """The tile edge for ``nt.batch``: ``N`` (one call) when it fits ``budget``, else the largest
    ``N / 2^k ≥ 16`` whose tile fits with the whole output; ``None`` when none does."""
    out = c.kernel_bytes(kind, N)
    B = N
    while B >= 16:
        _, mem = estimate(impl, c, kind, B)
        if mem - c.kernel_bytes(kind, B) + out <= budget:
            return B
        if B % 2:
            break
        B //= 2
    return None


# ------------------------------------------------------------------------------------------------ runs


def implementations(nt_python: Path | None, only: list[str] | None) -> list[str]:
    """pntk's engines (``pntk.kernels.ENGINES``) and ``auto``, the torch.func snippet, neural-tangents."""
    from pntk.kernels import ENGINES

    names = [f"pntk:{getattr(e, 'value', e)}" for e in ENGINES] + ["pntk:auto", "torch.func"]
    if nt_python is not None:
        names += [f"nt:{i}" for i in NT_IMPLEMENTATIONS]
    if only:
        names = [n for n in names if any(n == o or (o.endswith("*") and n.startswith(o[:-1])) for o in only)]
    return names


def measure(
    impl: str,
    wl: models.Workload,
    kind: str,
    N: int,
    args: argparse.Namespace,
    nt_python: Path | None,
    batch_size: int | None = None,
) -> harness.WorkerOutcome:
    """One measurement in its own subprocess."""
    common = {
        "workload": wl.name,
        "N": N,
        "kind": kind,
        "repeats": args.repeats,
        "max_seconds": args.max_seconds,
        "seed": 0,
    }
    cap = int(args.memory_gb * 2**30)
    if impl.startswith("nt:"):
        assert nt_python is not None
        job = {**common, "implementation": impl[3:], "batch_size": batch_size or 0}
        return harness.run_worker(
            nt_python, harness.BENCH_DIR / "nt_worker.py", job, timeout_s=args.timeout, memory_cap_bytes=cap,
            env={"TF_CPP_MIN_LOG_LEVEL": "2"},
        )  # fmt: skip
    job = {**common, "implementation": impl, "threads": args.threads, "memory_bytes": 0.5 * cap}
    return harness.run_worker(
        sys.executable, harness.BENCH_DIR / "torch_worker.py", job, timeout_s=args.timeout, memory_cap_bytes=cap
    )


def run_benchmarks(args: argparse.Namespace, rate: float, nt_python: Path | None) -> list[dict[str, Any]]:
    impls = implementations(nt_python, args.implementations)
    rows: list[dict[str, Any]] = []
    budget = args.memory_gb * 2**30
    for name in args.workloads:
        wl = models.get_workload(name)
        costs = Costs.of(wl)
        print(f"\n## {wl.name}: {wl.description}; P = {costs.P:,}, O = {costs.O}, "
              f"forward {costs.forward_flops / 1e6:.1f} MFLOP/sample", flush=True)  # fmt: skip
        measured: dict[str, list[tuple[str, int, float]]] = {}
        failed: dict[tuple[str, str], str] = {}
        for N in args.N:
            for kind in args.kinds:
                if skipped_by_user(args.skip_combos, name, N, kind):
                    continue
                floor = floor_flops(costs, kind, N)
                floor_s = floor["total"] / (rate * 1e9)
                for impl in impls:
                    row: dict[str, Any] = {
                        "workload": name, "N": N, "kind": kind, "implementation": impl, "P": costs.P,
                        "floor_flops": floor, "floor_s": floor_s, "run": args.run_id,
                    }  # fmt: skip
                    flops, mem = estimate(impl, costs, kind, N)
                    est_s = predict_seconds(impl, costs, kind, N, measured.get(impl, []), rate)
                    row["estimate_s"] = est_s
                    row["estimate_bytes"] = mem
                    batch = None
                    reason = None
                    if (impl, kind) in failed:
                        reason = f"{failed[impl, kind]} at a smaller N"
                    elif est_s > args.max_seconds:
                        reason = f"estimated {fmt_seconds(est_s)} per call > {fmt_seconds(args.max_seconds)} cap"
                    elif impl.startswith("nt:"):
                        batch = nt_batch_size(impl, costs, kind, N, budget)
                        if batch is None:
                            reason = f"estimated memory {fmt_bytes(mem)} > {args.memory_gb:g} GiB even when tiled"
                    elif (costs.kernel_bytes(kind, N) if impl == "torch.func" else mem) > budget:
                        # (torch.func chunks its Jacobians to half the cap; only its output must fit)
                        reason = f"estimated memory {fmt_bytes(mem)} > {args.memory_gb:g} GiB cap"
                    if reason is None:
                        outcome = measure(impl, wl, kind, N, args, nt_python, batch)
                        row["status"] = outcome.status
                        row["wall_s"] = outcome.wall_s
                        row["peak_rss_bytes"] = outcome.peak_rss_bytes
                        if outcome.result is not None:
                            row.update({k: v for k, v in outcome.result.items() if k != "implementation"})
                        if outcome.status == "ok":
                            measured.setdefault(impl, []).append((kind, N, row["median_s"]))
                        else:
                            reason = outcome.detail
                            failed[impl, kind] = outcome.status
                    else:
                        row["status"] = "skipped"
                    row["reason"] = reason
                    rows.append(row)
                    print("  " + progress_line(row), flush=True)
    return rows


def skipped_by_user(combos: list[tuple[str, ...]], workload: str, N: int, kind: str) -> bool:
    """Whether ``--skip`` names this combination (``*`` matches anything)."""
    actual = (workload, str(N), kind)
    return any(all(c in ("*", a) for c, a in zip(combo, actual)) for combo in combos)


def progress_line(row: dict[str, Any]) -> str:
    head = f"{row['workload']} N={row['N']} {row['kind']} {row['implementation']}: "
    if row["status"] != "ok":
        return head + f"{row['status']} ({row['reason']})"
    extra = f", compile {fmt_seconds(row['compile_s'])}" if row.get("compile_s") is not None else ""
    auto = f", auto → {row['auto_engine']}" if row.get("auto_engine") else ""
    return head + f"{fmt_seconds(row['median_s'])}{extra}{auto}, peak {fmt_bytes(row.get('peak_rss_bytes'))}"


def add_ratios(rows: list[dict[str, Any]]) -> None:
    """``ratio_best_nt``: time / the fastest neural-tangents time of the same workload, N and kind;
    ``ratio_floor``: time / the roofline floor."""
    best: dict[tuple, float] = {}
    for r in rows:
        if r["implementation"].startswith("nt:") and r["status"] == "ok":
            key = (r["workload"], r["N"], r["kind"])
            best[key] = min(best.get(key, math.inf), r["median_s"])
    for r in rows:
        key = (r["workload"], r["N"], r["kind"])
        ok = r["status"] == "ok"
        r["best_nt_s"] = best.get(key)
        r["ratio_best_nt"] = r["median_s"] / best[key] if ok and key in best else None
        r["ratio_floor"] = r["median_s"] / r["floor_s"] if ok and r["floor_s"] > 0 else None


def results_table(rows: list[dict[str, Any]]) -> str:
    headers = ["workload", "N", "kind", "implementation", "time", "compile", "× best nt", "× floor", "peak RSS", "note"]
    lines = []
    for r in rows:
        ok = r["status"] == "ok"
        note = ""
        if r.get("auto_engine"):
            note = f"auto → {r['auto_engine']}"
        if r.get("batch_size") and r["implementation"].startswith("nt:") and r["batch_size"] < r["N"]:
            note = f"nt.batch {r['batch_size']}"
        if ok and r.get("warmup_reused"):
            note = (note + "; " if note else "") + "1 call"
        if ok and r.get("run") and r.get("run") != r.get("current_run", r.get("run")):
            note += " (earlier run)"
        if not ok:
            note = f"{r['status']}: {r['reason']}"
        lines.append([
            r["workload"], str(r["N"]), r["kind"], r["implementation"],
            fmt_seconds(r["median_s"]) if ok else "—",
            fmt_seconds(r.get("compile_s")) if ok and r.get("compile_s") is not None else "",
            fmt_ratio(r["ratio_best_nt"]), fmt_ratio(r["ratio_floor"]),
            fmt_bytes(r.get("peak_rss_bytes")) if ok else "", note,
        ])  # fmt: skip
    return harness.table(headers, lines)


def floor_table(rows: list[dict[str, Any]], rate: float) -> str:
    seen, lines = set(), []
    for r in rows:
        key = (r["workload"], r["N"], r["kind"])
        if key in seen:
            continue
        seen.add(key)
        f = r["floor_flops"]
        lines.append([
            r["workload"], str(r["N"]), r["kind"], f"{f['forward'] / 1e9:.3g}", f"{f['backward'] / 1e9:.3g}",
            f"{f['gram'] / 1e9:.3g}", f"{f['total'] / 1e9:.3g}", fmt_seconds(f["total"] / (rate * 1e9)),
        ])  # fmt: skip
    head = [
        "workload",
        "N",
        "kind",
        "fwd GFLOP",
        "bwd GFLOP",
        "Gram GFLOP",
        "total GFLOP",
        f"floor @ {rate:.0f} GFLOP/s",
    ]
    return harness.table(head, lines)


# ------------------------------------------------------------------------------------------------ cross-check


def crosscheck(args: argparse.Namespace, nt_python: Path, workloads: list[str]) -> list[dict[str, Any]]:
    """pntk (``auto``) against neural-tangents with the same weights, in ``--crosscheck-dtype``.

    The PyTorch network's parameters are transferred into the stax twin. All three kinds are compared with
    ``nt:structured_derivatives`` (which checks the pNTK and trace conventions documented in
    ``nt_worker.py``), and the eNTK with the other two implementations too. Reports
    ``max |K_nt − K_pntk| / max |K_pntk|``. (XLA's float64 convolutions on CPU are slow: a float64
    cross-check of a convolutional workload takes minutes under neural-tangents' Jacobian contraction.)
    """
    out = []
    cap = int(args.memory_gb * 2**30)
    x64 = args.crosscheck_dtype == "float64"
    with tempfile.TemporaryDirectory() as tmp:
        for name in workloads:
            export = f"{tmp}/{name}.npz"
            for kind in KINDS:
                ref_path = f"{tmp}/{name}-{kind}-pntk.npy"
                job = {
                    "workload": name, "N": args.crosscheck_N, "kind": kind, "implementation": "pntk:auto",
                    "repeats": 1, "max_seconds": 1, "dtype": args.crosscheck_dtype, "threads": args.threads,
                    "save_kernel": ref_path, "export": export, "single": True,
                }  # fmt: skip
                ref = harness.run_worker(
                    sys.executable, harness.BENCH_DIR / "torch_worker.py", job, timeout_s=args.timeout,
                    memory_cap_bytes=cap,
                )  # fmt: skip
                if ref.status != "ok":
                    out.append({"workload": name, "kind": kind, "status": ref.status, "reason": ref.detail})
                    continue
                K_ref = np.load(ref_path)
                impls = NT_IMPLEMENTATIONS if kind == "entk" else ("structured_derivatives",)
                for impl in impls:
                    path = f"{tmp}/{name}-{kind}-{impl}.npy"
                    job = {
                        "workload": name, "N": args.crosscheck_N, "kind": kind, "implementation": impl,
                        "repeats": 1, "max_seconds": 1, "x64": x64, "load": export, "save_kernel": path,
                    }  # fmt: skip
                    res = harness.run_worker(
                        nt_python, harness.BENCH_DIR / "nt_worker.py", job, timeout_s=args.timeout,
                        memory_cap_bytes=cap, env={"TF_CPP_MIN_LOG_LEVEL": "2"},
                    )  # fmt: skip
                    entry: dict[str, Any] = {
                        "workload": name, "kind": kind, "implementation": f"nt:{impl}",
                        "dtype": args.crosscheck_dtype, "N": args.crosscheck_N,
                    }  # fmt: skip
                    if res.status != "ok":
                        entry.update(status=res.status, reason=res.detail)
                    else:
                        K = np.load(path)
                        if K.shape != K_ref.shape:
                            entry.update(status="error", reason=f"shape {K.shape} vs pntk {K_ref.shape}")
                        else:
                            err = float(np.abs(K - K_ref).max() / np.abs(K_ref).max())
                            entry.update(status="ok", rel_max_error=err, shape=list(K.shape))
                    out.append(entry)
                    print("  " + crosscheck_line(entry), flush=True)
    return out


def crosscheck_line(e: dict[str, Any]) -> str:
    head = f"cross-check {e['workload']} {e['kind']} pntk vs {e.get('implementation', '')}: "
    if e["status"] == "ok":
        return head + f"max rel. error {e['rel_max_error']:.2e} ({e['dtype']}, shape {e['shape']})"
    return head + f"{e['status']} ({e.get('reason')})"


# ------------------------------------------------------------------------------------------------ main


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    csv = lambda s: [t for t in s.split(",") if t]  # noqa: E731
    p.add_argument("--workloads", type=csv, default=None, help=f"comma-separated, from {', '.join(models.WORKLOADS)}")
    p.add_argument(
        "--N", type=lambda s: [int(t) for t in csv(s)], default=None, help="sample counts (default 256,1024,4096)"
    )
    p.add_argument("--kinds", type=csv, default=None, help="pntk,trace,entk (default all)")
    p.add_argument("--repeats", type=int, default=None, help="timed calls after the warm-up (default 3)")
    p.add_argument("--quick", action="store_true", help="small run: mlp,convnet at N=64,128, 2 repeats, 20 s cap")
    p.add_argument("--out", type=Path, default=harness.BENCH_DIR / "out" / "kernels.json")
    p.add_argument(
        "--nt-venv",
        type=Path,
        default=harness.REPO_ROOT / ".venv-nt",
        help="neural-tangents venv, made by benchmarks/nt-venv.sh DIR (default .venv-nt)",
    )
    p.add_argument("--no-nt", action="store_true", help="time PyTorch implementations only")
    p.add_argument(
        "--implementations",
        type=csv,
        default=None,
        help="only these, e.g. 'pntk:*' or 'pntk:auto,nt:structured_derivatives'",
    )
    p.add_argument(
        "--merge",
        action="store_true",
        help="keep the rows of --out that this run does not re-measure (their ratios mix runs)",
    )
    p.add_argument("--max-seconds", type=float, default=60.0, help="skip when one call is estimated longer")
    p.add_argument(
        "--timeout",
        type=float,
        default=None,
        help="per-measurement wall-time limit in s (default 4 × max-seconds + 120)",
    )
    p.add_argument("--memory-gb", type=float, default=None, help="memory cap (default 70%% of available, ≤ 16)")
    p.add_argument("--threads", type=int, default=2, help="torch threads (JAX uses all cores, here 2)")
    p.add_argument(
        "--skip", type=csv, default=[], help="combinations to leave out, 'workload:N:kind', '*' matching anything"
    )
    p.add_argument(
        "--crosscheck",
        type=csv,
        default=None,
        help="workloads to cross-check numerically against neural-tangents (default mlp,convnet; '' none)",
    )
    p.add_argument("--crosscheck-N", type=int, default=8)
    p.add_argument("--crosscheck-dtype", choices=("float64", "float32"), default="float64")
    args = p.parse_args(argv)
    if args.quick:
        args.workloads = args.workloads or ["mlp", "convnet"]
        args.N = args.N or [64, 128]
        args.repeats = args.repeats or 2
        args.max_seconds = min(args.max_seconds, 20.0)
    args.workloads = args.workloads or list(models.WORKLOADS)
    for w in args.workloads:
        models.get_workload(w)
    args.N = sorted(args.N or [256, 1024, 4096])
    args.kinds = args.kinds or list(KINDS)
    unknown = set(args.kinds) - set(KINDS)
    if unknown:
        p.error(f"unknown kinds {sorted(unknown)}; valid: {', '.join(KINDS)}")
    args.repeats = args.repeats or 3
    if args.timeout is None:
        args.timeout = 4 * args.max_seconds + 120
    if args.memory_gb is None:
        args.memory_gb = min(16.0, 0.7 * harness.memory_available_bytes() / 2**30)
    if args.crosscheck is None:
        args.crosscheck = [w for w in ("mlp", "convnet") if w in args.workloads]
    try:
        args.skip_combos = [tuple(s.split(":")) for s in args.skip]
        assert all(len(c) == 3 for c in args.skip_combos)
    except AssertionError:
        p.error("--skip takes 'workload:N:kind' items, '*' matching anything, e.g. convnet:4096:*")
    args.run_id = dt.datetime.now().isoformat(timespec="seconds")
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    import torch

    torch.set_num_threads(args.threads)
    nt_python: Path | None = None
    if not args.no_nt:
        candidate = args.nt_venv / "bin" / "python"
        if candidate.exists():
            nt_python = candidate
        else:
            print(f"neural-tangents venv not found at {args.nt_venv}; make it with "
                  f"benchmarks/nt-venv.sh {args.nt_venv} (timing PyTorch only)", flush=True)  # fmt: skip

    print(f"# bench_kernels {args.run_id}; load average {harness.load_average()}", flush=True)
    rate = harness.matmul_gflops(threads=args.threads)
    print(f"float32 matmul rate: {rate:.1f} GFLOP/s on {args.threads} threads (2048² matmul, median of 5); "
          f"memory cap {args.memory_gb:.1f} GiB; per-call cap {args.max_seconds:g} s", flush=True)  # fmt: skip

    checks = []
    if nt_python is not None and args.crosscheck:
        print(f"\n## numerical cross-check (same weights, {args.crosscheck_dtype})", flush=True)
        checks = crosscheck(args, nt_python, args.crosscheck)

    rows = run_benchmarks(args, rate, nt_python)

    previous: dict[str, Any] = {}
    if args.merge and args.out.exists():
        previous = json.loads(args.out.read_text())
        fresh = {(r["workload"], r["N"], r["kind"], r["implementation"]) for r in rows}
        kept = [
            r
            for r in previous.get("results", [])
            if (r["workload"], r["N"], r["kind"], r["implementation"]) not in fresh
        ]
        rows = kept + rows
        order = {w: i for i, w in enumerate(models.WORKLOADS)}
        rows.sort(key=lambda r: (order.get(r["workload"], 99), r["N"], KINDS.index(r["kind"])))
        if not checks:
            checks = previous.get("crosscheck", [])
    for r in rows:
        r["current_run"] = args.run_id
    add_ratios(rows)

    print("\n## results (median of repeats; × best nt and × floor are ratios of times)\n")
    print(results_table(rows))
    print("\n## roofline floor\n")
    print(floor_table(rows, rate))
    summary = auto_summary(rows)
    if summary:
        print("\n## pntk auto / best neural-tangents\n")
        print(summary)

    import pntk

    doc = {
        "run": args.run_id,
        "machine": {
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
            "threads": args.threads,
            "matmul_gflops": rate,
            "load_average_end": harness.load_average(),
            "torch": torch.__version__,
            "pntk": pntk.__version__,
            "nt_python": str(nt_python) if nt_python else None,
        },
        "config": {k: v for k, v in vars(args).items() if k not in ("skip_combos", "out", "nt_venv")},
        "crosscheck": checks,
        "results": [{k: v for k, v in r.items() if k != "current_run"} for r in rows],
        "earlier_runs": sorted({r["run"] for r in rows if r.get("run") != args.run_id}),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(doc, indent=1, default=str))
    print(f"\nwrote {args.out}")


def auto_summary(rows: list[dict[str, Any]]) -> str:
    lines = [
        [r["workload"], str(r["N"]), r["kind"], fmt_seconds(r["median_s"]), fmt_seconds(r["best_nt_s"]),
         fmt_ratio(r["ratio_best_nt"])]
        for r in rows
        if r["implementation"] == "pntk:auto" and r["status"] == "ok" and r.get("ratio_best_nt")
    ]  # fmt: skip
    return harness.table(["workload", "N", "kind", "pntk auto", "best nt", "ratio"], lines) if lines else ""


if __name__ == "__main__":
    main()
