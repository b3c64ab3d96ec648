"""Random-feature sketches of the pNTK against TRAK's and dattri's projectors, and against the exact kernel.

Usage (from the repository root; ``pip install traker dattri`` into the venv first, they are not pntk
dependencies)::

    .venv/bin/python benchmarks/bench_features.py [--parts throughput accuracy million network] [--threads 1]
        [--k 4096] [--n-throughput 10000] [--n-peers 512] [--n-accuracy 10000] [--n-million 1000000]
        [--million-methods kronecker nystrom] [--epochs 5] [--out benchmarks/out/features.json]
        [--figure docs/features_mnist1d_mlp.png] [--plot-only]

MNIST-1D generated offline (``mnist1d.data.make_dataset``, cached under ``/tmp/pntk-bench``), the MLP
40-512-512-10 at PyTorch's initialisation, float32, pNTK gradients ``∇ Σ_a f_a / √O``. Every measurement runs in
its own process (``features_worker.py``), whose peak resident memory is sampled from here.

1. **throughput**: samples per second of a ``k``-dimensional sketch: ``pntk.features`` (Kronecker blocks on
   the structured engine's factors) against per-sample gradients by ``vmap(grad)`` fed to TRAK's CPU
   ``BasicProjector`` and to dattri's CPU projector (``random_project``), with the projection state each holds.
   Both peers regenerate their ``P × 100`` matrix blocks on every call at their default ``block_size``;
   holding the whole ``P × k`` matrix instead (``block_size = k``) would take ``4·P·k`` bytes (4.7 GB here).
2. **accuracy**: at ``N = --n-accuracy``, ``‖Φ Φᵀ − K‖_F / ‖K‖_F`` and the top eigenvalues against ``k``, and
   test accuracy of ridge regression in ``k`` dimensions beside exact pNTK regression (same ``λ``), Nyström
   and the trained network.
3. **million**: ``N = --n-million`` training samples sketched chunk by chunk straight into a ridge regression in
   ``k`` dimensions (``Φ`` is never held), then test accuracy, for each of ``--million-methods``: the Kronecker
   projection, and Nyström features of ``k`` landmarks drawn uniformly from the training samples.
4. **network** (not run by default): the MLP trained on the same ``--n-million`` samples for ``--epochs``
   epochs (Adam, cross-entropy), its test accuracy beside the sketch's.

Nothing here asserts a time; figures go to stdout as tables, to ``--out`` as JSON and to ``--figure``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import harness  # noqa: E402
from harness import fmt_bytes, table  # noqa: E402

PYTHON = sys.executable
WORKER = Path(__file__).resolve().parent / "features_worker.py"
GiB = 2**30


def run(job: dict, timeout_s: float, memory_cap: float = 3 * GiB) -> dict:
    outcome = harness.run_worker(PYTHON, WORKER, job, timeout_s=timeout_s, memory_cap_bytes=int(memory_cap))
    result = dict(outcome.result or {})
    result.update(status=outcome.status, detail=outcome.detail, wall_s=outcome.wall_s, peak_rss=outcome.peak_rss_bytes)
    print(f"  {job.get('tool', job['task'])}: {outcome.status} {outcome.detail}", flush=True)
    return result


def throughput(args, previous: list[dict]) -> list[dict]:
    """Every tool's row, measured now if it is in ``--tools`` (default all), else kept from ``previous``."""
    rows = []
    for tool, n in (
        ("pntk", args.n_throughput),
        ("vmap-grad", args.n_peers * 4),
        ("trak", args.n_peers),
        ("dattri", args.n_peers),
        ("trak-matrix", args.n_peers),
    ):
        job = {
            "task": "throughput",
            "tool": tool,
            "n": n,
            "k": args.k,
            "threads": args.threads,
            "dataset": 25000,
            "chunk": 512,
        }
        if args.tools and tool not in args.tools:
            rows += [r for r in previous if r.get("tool") == tool]
            continue
        rows.append(run(job, timeout_s=1200))
    return rows


def accuracy(args) -> dict:
    job = {
        "task": "accuracy",
        "n": args.n_accuracy,
        "n_test": 5000,
        "ks": [256, 512, 1024, 2048, 4096],
        "threads": args.threads,
        "dataset": 25000,
        "ridge_scale": args.ridge_scale,
        "epochs": 30,
    }
    return run(job, timeout_s=2400)


def million(args) -> dict:
    """One streamed regression per method of ``--million-methods``, keyed by method."""
    out = {}
    for method in args.million_methods:
        job = {
            "task": "million",
            "n": args.n_million,
            "n_test": 10000,
            "k": args.k,
            "threads": args.threads,
            "dataset": 1250000,
            "ridge_scales": args.ridge_scales,
            "validation": args.validation,
            "chunk": 4096,
            "method": method,
            "load": harness.load_average(),
        }
        out[method] = run(job, timeout_s=3600, memory_cap=4 * GiB)
    return out


def network(args) -> dict:
    job = {
        "task": "network",
        "n": args.n_million,
        "n_test": 10000,
        "epochs": args.epochs,
        "threads": args.threads,
        "dataset": 1250000,
    }
    return run(job, timeout_s=7200, memory_cap=4 * GiB)


def report(results: dict) -> None:
    if "throughput" in results:
        rows = results["throughput"]
        base = next((r for r in rows if r.get("tool") == "trak" and r.get("samples_per_s")), None)
        print(
            table(
                ["tool", "N", "samples/s", "× TRAK", "projection state", "peak RSS"],
                [
                    [
                        r.get("tool", "?"),
                        str(r.get("n", "")),
                        f"{r.get('samples_per_s', float('nan')):.1f}",
                        f"{r['samples_per_s'] / base['samples_per_s']:.0f}×"
                        if base and r.get("samples_per_s")
                        else "—",
                        fmt_bytes(r.get("state_bytes")),
                        fmt_bytes(r.get("peak_rss")),
                    ]
                    for r in rows
                ],
            )
        )
    if "accuracy" in results and results["accuracy"].get("sketches"):
        a = results["accuracy"]
        print(f"N = {a['n']}: exact pNTK regression {a['exact_accuracy']:.3f}, network {a['network_accuracy']:.3f}")
        print(
            table(
                ["method", "k", "‖ΦΦᵀ−K‖/‖K‖", "top-10 λ error", "test acc.", "seconds"],
                [
                    [
                        s["method"],
                        str(s["k"]),
                        f"{s['relative_error']:.3g}",
                        f"{s['top_eigenvalue_relative_error']:.3g}",
                        f"{s['accuracy']:.3f}",
                        f"{s['seconds']:.1f}",
                    ]
                    for s in a["sketches"]
                ],
            )
        )
    if "network" in results:
        w = results["network"]
        print(f"network trained on N = {w.get('n')}: test accuracy {w.get('test_accuracy')} ({w.get('seconds')} s)")
    for method, m in results.get("million", {}).items():
        keys = ("status", "n", "k", "landmarks_s", "sketch_s", "gram_s", "select_s", "solve_s", "total_s")
        keys += ("ridge_scale", "validation_accuracy", "test_accuracy", "test_accuracy_by_scale", "peak_rss", "detail")
        print(method, json.dumps({key: m.get(key) for key in keys}))


def figure(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    panels = [p for p in ("throughput", "accuracy") if p in results]
    fig, axes = plt.subplots(1, 1 + 2 * ("accuracy" in panels) - ("throughput" not in panels), figsize=(13, 3.8))
    axes = np.atleast_1d(axes)
    i = 0
    if "throughput" in results:
        ax = axes[i]
        i += 1
        rows = [r for r in results["throughput"] if r.get("samples_per_s")]
        names = {
            "pntk": "pntk\n(Kronecker)",
            "vmap-grad": "vmap(grad)\nalone",
            "trak": "TRAK\n(block 100)",
            "dattri": "dattri",
            "trak-matrix": "TRAK\n(P×k matrix)*",
        }
        ax.bar([names.get(r["tool"], r["tool"]) for r in rows], [r["samples_per_s"] for r in rows], color="C0")
        for j, r in enumerate(rows):
            label = f"{r['samples_per_s']:.0f}/s\n{fmt_bytes(r.get('state_bytes')) if r.get('state_bytes') else ''}"
            ax.text(j, r["samples_per_s"], label, ha="center", va="bottom", fontsize=7)
        ax.set_yscale("log")
        ax.set_ylim(top=5 * max(r["samples_per_s"] for r in rows))
        ax.set_ylabel("samples / s (k = 4096)")
        ax.set_title("projection throughput (* timed on P/8 rows)", fontsize=9)
        ax.tick_params(axis="x", labelsize=7)
    if "accuracy" in results and results["accuracy"].get("sketches"):
        a = results["accuracy"]
        ax = axes[i]
        for method, marker in (("kronecker", "o"), ("nystrom", "s")):
            s = [e for e in a["sketches"] if e["method"] == method]
            ax.loglog([e["k"] for e in s], [e["relative_error"] for e in s], marker=marker, label=method)
        ks = np.array([e["k"] for e in a["sketches"] if e["method"] == "kronecker"], float)
        last = [e["relative_error"] for e in a["sketches"] if e["method"] == "kronecker"][-1]
        ax.loglog(ks, last * (ks / ks[-1]) ** -0.5, "k:", label="∝ k^-1/2")
        ax.set_xticks(ks, [str(int(k)) for k in ks], minor=False)
        ax.minorticks_off()
        ax.set_xlabel("k")
        ax.set_ylabel("‖ΦΦᵀ − K‖_F / ‖K‖_F")
        ax.set_title(f"error against k, N = {a['n']}", fontsize=9)
        ax.legend(fontsize=7)
        ax = axes[i + 1]
        for method, marker in (("kronecker", "o"), ("nystrom", "s")):
            s = [e for e in a["sketches"] if e["method"] == method]
            ax.semilogx([e["k"] for e in s], [e["accuracy"] for e in s], marker=marker, label=f"{method} ridge")
        ax.set_xticks(ks, [str(int(k)) for k in ks], minor=False)
        ax.minorticks_off()
        ax.axhline(a["exact_accuracy"], color="k", ls="--", label=f"exact pNTK regression, N = {a['n']:,}")
        ax.axhline(a["network_accuracy"], color="C3", ls=":", label=f"network trained on N = {a['n']:,}")
        for (method, m), color in zip(results.get("million", {}).items(), ("C2", "C4")):
            if m.get("test_accuracy"):
                ax.axhline(m["test_accuracy"], color=color, ls="-.", label=f"{method} ridge, N = {m['n']:,}")
        if results.get("network", {}).get("test_accuracy"):
            w = results["network"]
            ax.axhline(w["test_accuracy"], color="C1", ls=":", label=f"network trained on N = {w['n']:,}")
        ax.set_xlabel("k")
        ax.set_ylabel("test accuracy")
        ax.set_title("MNIST-1D test accuracy", fontsize=9)
        ax.legend(fontsize=7)
    fig.suptitle("pNTK sketches, MLP 40-512-512-10, MNIST-1D, float32", fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--parts", nargs="+", default=["throughput", "accuracy", "million"])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--tools", nargs="+", help="throughput: measure only these tools, keep the others' rows")
    parser.add_argument("--k", type=int, default=4096)
    parser.add_argument("--n-throughput", type=int, default=10000)
    parser.add_argument("--n-peers", type=int, default=512)
    parser.add_argument("--n-accuracy", type=int, default=20000)
    parser.add_argument("--n-million", type=int, default=1000000)
    parser.add_argument("--ridge-scale", type=float, default=1e-3, help="λ as a multiple of the mean of diag K")
    parser.add_argument(
        "--ridge-scales",
        type=float,
        nargs="+",
        default=[1e-3, 1e-2, 1e-1, 1.0],
        help="million: the λ / mean diag K̂ to choose from on held-out training rows",
    )
    parser.add_argument(
        "--million-methods",
        nargs="+",
        choices=["kronecker", "nystrom"],
        default=["kronecker", "nystrom"],
        help="million: the Kronecker projection and/or Nyström features of k uniform landmarks",
    )
    parser.add_argument("--epochs", type=int, default=5, help="network: epochs of training on --n-million samples")
    parser.add_argument("--validation", type=int, default=10000, help="million: held-out training rows")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/out/features.json"))
    parser.add_argument("--figure", type=Path, default=Path("docs/features_mnist1d_mlp.png"))
    parser.add_argument("--plot-only", action="store_true", help="redraw the figure from --out")
    args = parser.parse_args()
    results = json.loads(args.out.read_text()) if args.out.exists() else {}
    if not args.plot_only:
        results["machine"] = {"load_average": harness.load_average(), "threads": args.threads}
        for part in args.parts:
            print(f"{part} …", flush=True)
            if part == "throughput":
                results[part] = throughput(args, results.get(part, []))
            else:
                results[part] = {"accuracy": accuracy, "million": million, "network": network}[part](args)
            args.out.parent.mkdir(parents=True, exist_ok=True)
            args.out.write_text(json.dumps(results, indent=1))
    report(results)
    if "throughput" in results or "accuracy" in results:
        figure(results, args.figure)


if __name__ == "__main__":
    main()
