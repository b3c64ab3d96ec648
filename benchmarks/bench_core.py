"""Core acceptance benchmark: every pntk engine and kind on an MLP and a small CNN at two sizes, and the
peak memory of a large pNTK computed in bounded tiles.

Usage (from the repository root)::

    .venv/bin/python benchmarks/bench_core.py [--repeats 3] [--max-seconds 20] [--memory-N 4000]
        [--memory-batch-size 250] [--skip-memory] [--out benchmarks/out/core.json]

1. **Times.** For each configuration (model, width, N) and each kind, every engine in
   ``pntk.kernels.ENGINES`` and ``"auto"``: ``pntk.kernel(model, x, kind=..., engine=...)`` with ``x2 = None``,
   the median of ``--repeats`` calls after a warm-up, in this process, float32, 2 threads. An engine
   whose call is predicted (from a FLOP count, or from its own earlier times) to exceed ``--max-seconds``
   is skipped and says so. The ratio column is time / the fastest engine's time for that row.
2. **Memory.** In a separate process: ``pntk.pntk(model, x, batch_size=B)`` (``engine="auto"``) of an
   ``N × N`` kernel (default 4,000) for an MLP 784-512-512-512-10 (0.93 M parameters); its peak resident
   memory (``VmHWM`` polled, and the worker's own ``ru_maxrss``) against what all per-sample gradients
   would hold, ``N · P · 4`` bytes.

Nothing here asserts a time; numbers on a shared machine are noisy.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import signal
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402

import harness  # noqa: E402
import models  # noqa: E402
from bench_kernels import Costs, predict_seconds  # noqa: E402
from harness import fmt_bytes, fmt_ratio, fmt_seconds  # noqa: E402

KINDS = ("pntk", "trace", "entk")

#: (label, model, sizes for :func:`models.small_workload`, N)
CONFIGS = (
    ("MLP 784-256-256-10", "mlp", {"width": 256, "depth": 2}, 128),
    ("MLP 784-1024-1024-10", "mlp", {"width": 1024, "depth": 2}, 512),
    ("CNN 16-32 ch, 16×16", "convnet", {"width": 16, "hw": 16}, 64),
    ("CNN 32-64 ch, 32×32", "convnet", {"width": 32, "hw": 32}, 256),
)


class _Timeout(Exception):
    pass


def _alarm(signum, frame):  # type: ignore[no-untyped-def]
    raise _Timeout


def time_engines(args: argparse.Namespace, rate: float) -> list[dict[str, Any]]:
    import pntk
    from pntk.kernels import ENGINES

    engines = [getattr(e, "value", e) for e in ENGINES] + ["auto"]
    rows: list[dict[str, Any]] = []
    for label, name, sizes, N in CONFIGS:
        wl = models.small_workload(name, **sizes)
        costs = Costs.of(wl)
        model = models.build_torch(wl, seed=0)
        x = models.sample_inputs(wl, N, seed=1)
        print(f"\n## {label}, N = {N}: P = {costs.P:,}", flush=True)
        history: dict[str, list[tuple[str, int, float]]] = {}
        for kind in KINDS:
            for engine in engines:
                impl = f"pntk:{engine}"
                row: dict[str, Any] = {"config": label, "N": N, "P": costs.P, "kind": kind, "engine": engine}
                est = predict_seconds(impl, costs, kind, N, history.get(impl, []), rate)
                if est > args.max_seconds:
                    row.update(status="skipped", reason=f"estimated {fmt_seconds(est)} > {args.max_seconds:g} s cap")
                else:
                    fn = lambda: pntk.kernel(model, x, kind=kind, engine=engine, progress=False)  # noqa: E731, B023 (called in this iteration)
                    signal.signal(signal.SIGALRM, _alarm)
                    signal.alarm(int(args.timeout))
                    try:
                        t = harness.time_calls(
                            fn, repeats=args.repeats, max_seconds=args.max_seconds, first_compiles=False
                        )
                        row.update(status="ok", median_s=t.median_s, times_s=t.times_s, first_s=t.first_s,
                                   single_call=t.warmup_reused)  # fmt: skip
                        history.setdefault(impl, []).append((kind, N, t.median_s))
                    except _Timeout:
                        row.update(status="timeout", reason=f"over the {args.timeout:g} s limit")
                    except Exception as err:  # noqa: BLE001 - a broken engine is a result to report
                        row.update(status="error", reason=f"{type(err).__name__}: {err}"[:200])
                    finally:
                        signal.alarm(0)
                    if engine == "auto":
                        row["auto_engine"] = _auto_choice(model, x, kind)
                rows.append(row)
                done = (
                    fmt_seconds(row.get("median_s")) if row["status"] == "ok" else f"{row['status']} ({row['reason']})"
                )
                auto = f" (auto → {row['auto_engine']})" if row.get("auto_engine") else ""
                print(f"  {kind:5s} {engine:10s} {done}{auto}", flush=True)
    best: dict[tuple, float] = {}
    for r in rows:
        if r["status"] == "ok" and r["engine"] != "auto":
            key = (r["config"], r["kind"])
            best[key] = min(best.get(key, float("inf")), r["median_s"])
    for r in rows:
        key = (r["config"], r["kind"])
        r["ratio_best_engine"] = r["median_s"] / best[key] if r["status"] == "ok" and key in best else None
    return rows


def _auto_choice(model: torch.nn.Module, x: torch.Tensor, kind: str) -> str:
    try:
        import pntk

        return pntk.plan(model, x, kind=kind).engine
    except Exception as err:  # noqa: BLE001 - reporting only
        return f"? ({type(err).__name__})"


def memory_check(args: argparse.Namespace) -> dict[str, Any]:
    sizes = {"width": 512, "depth": 3}
    wl = models.small_workload("mlp", **sizes)
    P = models.num_params(models.build_torch(wl))
    N, B = args.memory_N, args.memory_batch_size
    job = {
        "workload": "mlp", "sizes": sizes, "N": N, "kind": "pntk", "implementation": "pntk:auto",
        "batch_size": B, "single": True, "threads": args.threads,
    }  # fmt: skip
    print(f"\n## memory: pNTK {N} × {N}, {wl.description} (P = {P:,}), batch_size {B}, engine auto", flush=True)
    out = harness.run_worker(
        sys.executable, harness.BENCH_DIR / "torch_worker.py", job, timeout_s=args.memory_timeout,
        memory_cap_bytes=int(args.memory_cap_gb * 2**30),
    )  # fmt: skip
    all_grads = N * P * 4
    res = out.result or {}
    entry = {
        "N": N, "P": P, "batch_size": B, "status": out.status, "reason": out.detail,
        "peak_rss_bytes": out.peak_rss_bytes, "rss_before_bytes": res.get("rss_before_bytes"),
        "seconds": res.get("median_s"), "auto_engine": res.get("auto_engine"),
        "all_per_sample_gradients_bytes": all_grads, "kernel_bytes": N * N * 4,
    }  # fmt: skip
    if out.status == "ok":
        entry["peak_over_all_gradients"] = out.peak_rss_bytes / all_grads
    return entry


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--max-seconds", type=float, default=20.0, help="skip an engine predicted slower per call")
    p.add_argument("--timeout", type=float, default=120.0, help="abandon one measurement after this (s)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--memory-N", type=int, default=4000)
    p.add_argument("--memory-batch-size", type=int, default=250)
    p.add_argument("--memory-timeout", type=float, default=900.0)
    p.add_argument("--memory-cap-gb", type=float, default=12.0, help="kill the memory worker beyond this")
    p.add_argument("--skip-memory", action="store_true")
    p.add_argument("--skip-times", action="store_true")
    p.add_argument("--out", type=Path, default=harness.BENCH_DIR / "out" / "core.json")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    run = dt.datetime.now().isoformat(timespec="seconds")
    print(f"# bench_core {run}; load average {harness.load_average()}", flush=True)
    rate = harness.matmul_gflops(threads=args.threads)
    print(f"float32 matmul rate: {rate:.1f} GFLOP/s on {args.threads} threads", flush=True)

    mem = None if args.skip_memory else memory_check(args)
    rows = [] if args.skip_times else time_engines(args, rate)

    if rows:
        print("\n## engine times (median of repeats; ratio = time / fastest engine of the row's kind)\n")
        lines = []
        for r in rows:
            ok = r["status"] == "ok"
            note = f"auto → {r['auto_engine']}" if r.get("auto_engine") else ""
            if ok and r.get("single_call"):
                note = (note + "; " if note else "") + "1 call"
            if not ok:
                note = f"{r['status']}: {r['reason']}"
            lines.append([r["config"], str(r["N"]), f"{r['P']:,}", r["kind"], r["engine"],
                          fmt_seconds(r.get("median_s")) if ok else "—", fmt_ratio(r["ratio_best_engine"]), note])  # fmt: skip
        print(harness.table(["model", "N", "P", "kind", "engine", "time", "× fastest", "note"], lines))
    if mem is not None:
        print("\n## peak memory (separate process)\n")
        if mem["status"] == "ok":
            print(harness.table(
                ["N", "P", "batch_size", "engine", "time", "peak RSS", "RSS before", "kernel", "all per-sample grads", "peak / grads"],
                [[str(mem["N"]), f"{mem['P']:,}", str(mem["batch_size"]), str(mem["auto_engine"]),
                  fmt_seconds(mem["seconds"]), fmt_bytes(mem["peak_rss_bytes"]), fmt_bytes(mem["rss_before_bytes"]),
                  fmt_bytes(mem["kernel_bytes"]), fmt_bytes(mem["all_per_sample_gradients_bytes"]),
                  f"{mem['peak_over_all_gradients']:.3f}"]],
            ))  # fmt: skip
        else:
            print(f"{mem['status']}: {mem['reason']}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    doc = {
        "run": run,
        "machine": {"matmul_gflops": rate, "threads": args.threads, "torch": torch.__version__,
                    "load_average_end": harness.load_average()},
        "config": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "times": rows,
        "memory": mem,
    }  # fmt: skip
    args.out.write_text(json.dumps(doc, indent=1))
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
