"""The kernel store at scale: a pNTK larger than memory under a memory budget, and the store's overhead.

Usage (from the repository root)::

    .venv/bin/python benchmarks/bench_store.py [--n 50000] [--memory 2GB] [--time-limit 1200]
        [--overhead-n 4096] [--repeats 5] [--engine auto] [--dir /tmp] [--keep] [--out benchmarks/out/store.json]

Two measurements, on the zoo's MLP 64-256-256-10 with digits-shaped random inputs (``[N, 1, 8, 8]``):

1. **Large.** ``pntk.compute(kind="pntk", memory=...)`` on ``N = --n`` inputs (50,000: 2.5e9 entries, 10 GB of
   float32) runs in a subprocess (``compute_worker.py``) whose peak resident memory (``VmHWM``) is sampled
   from here. Past ``--time-limit`` it is killed; the store keeps its finished tiles, which give the measured
   rate and the projected total time. Throughput is kernel entries (mirror included) per second of wall
   time from the worker's start to its last recorded tile (from the JSON tile log), and per second spent
   computing tiles (writes overlap the next tile). The store is deleted afterwards unless ``--keep``.
2. **Overhead.** On a kernel that fits in memory (``N = --overhead-n``), ``pntk.compute`` into a store
   against ``pntk.kernel`` in memory with the same tiles: medians of ``--repeats`` alternated runs after a
   warm-up, in wall time and in CPU time of the process (steadier when other processes share the cores).

Nothing here asserts a time; the figures go to stdout as a table and to ``--out`` as JSON.
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402

import harness  # noqa: E402
import pntk  # noqa: E402
from compute_worker import problem  # noqa: E402
from harness import fmt_bytes, fmt_seconds  # noqa: E402
from pntk.compute import compute  # noqa: E402
from pntk.store import open as open_store  # noqa: E402

WIDTH, DEPTH, SEED, THREADS = 256, 2, 0, 2


def large(n: int, memory: str, engine: str, time_limit: float, workdir: Path, keep: bool) -> dict:
    """One large compute in a subprocess, watched for peak memory; killed past ``time_limit``."""
    out, log = workdir / f"pntk-{n}.zarr", workdir / f"pntk-{n}.jsonl"
    shutil.rmtree(out, ignore_errors=True)
    log.unlink(missing_ok=True)
    job = {
        "n": n,
        "memory": memory,
        "out": str(out),
        "log": str(log),
        "engine": engine,
        "width": WIDTH,
        "depth": DEPTH,
        "threads": THREADS,
        "seed": SEED,
    }
    started = time.time()
    outcome = harness.run_worker(
        sys.executable,
        harness.BENCH_DIR / "compute_worker.py",
        job,
        timeout_s=time_limit,
        memory_cap_bytes=int(0.9 * harness.memory_available_bytes()),
    )
    tiles = [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []
    store = open_store(out) if (out / "zarr.json").exists() else None
    entries = sum(t["entries"] for t in tiles)
    # Wall-clock throughput, from the process start (imports and data hashing included) to the last tile.
    elapsed = tiles[-1]["time"] - started if tiles else None
    compute_s = sum(t["seconds"] for t in tiles)
    result = {
        "n": n,
        "memory": memory,
        "status": outcome.status,
        "detail": outcome.detail,
        "wall_s": outcome.wall_s,
        "peak_rss_bytes": outcome.peak_rss_bytes,
        "tile": store.spec.tile if store else None,
        "engine": store.spec.engine if store else None,
        "tiles_total": len(store.spec.plan()) if store else None,
        "tiles_done": len(tiles),
        "entries_done": entries,
        "entries_total": n * n,
        "entries_per_s": entries / elapsed if elapsed else None,
        "compute_entries_per_s": entries / compute_s if compute_s else None,
        "write_s": sum(t["write_seconds"] for t in tiles),
        "size_on_disk_bytes": store.size_on_disk() if store else None,
    }
    if result["entries_per_s"]:
        result["projected_total_s"] = n * n / result["entries_per_s"]
    if not keep:
        shutil.rmtree(out, ignore_errors=True)
    return result


def overhead(n: int, memory: str, engine: str, repeats: int, workdir: Path) -> dict:
    """Median time of ``pntk.compute`` into a store over that of ``pntk.kernel`` in memory, same tiles."""
    torch.set_num_threads(THREADS)
    model, x = problem(n, WIDTH, DEPTH, SEED)
    plan = pntk.plan(model, x, kind="pntk", engine=engine, memory=memory, executor="store")
    out = workdir / "overhead.zarr"

    def in_memory():
        pntk.kernel(model, x, kind="pntk", engine=plan.engine, batch_size=plan.tile, progress=False)

    def to_store():
        compute(
            model, x, kind="pntk", out=out, engine=plan.engine, batch_size=plan.tile, overwrite=True, progress=False
        )

    # Alternate the two so that drifts of the machine's speed hit both alike. CPU time (all threads of this
    # process, the store's writer included) is less sensitive than wall time to other processes' load.
    wall, cpu = {"memory": [], "store": []}, {"memory": [], "store": []}
    in_memory(), to_store()  # warm-up
    for _ in range(repeats):
        for name, fn in (("memory", in_memory), ("store", to_store)):
            w0, c0 = time.perf_counter(), time.process_time()
            fn()
            wall[name].append(time.perf_counter() - w0)
            cpu[name].append(time.process_time() - c0)
    shutil.rmtree(out, ignore_errors=True)
    wall_med = {k: statistics.median(v) for k, v in wall.items()}
    cpu_med = {k: statistics.median(v) for k, v in cpu.items()}
    return {
        "n": n,
        "tile": plan.tile,
        "engine": plan.engine,
        "repeats": repeats,
        "wall_s": wall,
        "cpu_s": cpu,
        "median_memory_s": wall_med["memory"],
        "median_store_s": wall_med["store"],
        "overhead": wall_med["store"] / wall_med["memory"] - 1,
        "median_memory_cpu_s": cpu_med["memory"],
        "median_store_cpu_s": cpu_med["store"],
        "cpu_overhead": cpu_med["store"] / cpu_med["memory"] - 1,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=50_000)
    parser.add_argument("--memory", default="2GB")
    parser.add_argument("--time-limit", type=float, default=1200.0, help="seconds for the large run")
    parser.add_argument("--overhead-n", type=int, default=10_000)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--engine", default="auto")
    parser.add_argument("--dir", type=Path, default=Path(tempfile.gettempdir()), help="where stores are written")
    parser.add_argument("--keep", action="store_true", help="keep the large store")
    parser.add_argument("--skip-large", action="store_true")
    parser.add_argument("--out", type=Path, default=harness.BENCH_DIR / "out" / "store.json")
    args = parser.parse_args()

    report = {
        "machine": {
            "python": platform.python_version(),
            "torch": torch.__version__,
            "threads": THREADS,
            "load_average": harness.load_average(),
            "matmul_gflops": harness.matmul_gflops(threads=THREADS),
        },
        "model": f"mlp 64-{WIDTH}x{DEPTH}-10, digits-shaped random inputs, float32, pNTK",
    }
    report["overhead"] = ov = overhead(args.overhead_n, args.memory, args.engine, args.repeats, args.dir)
    print(
        harness.table(
            ["overhead run", "N", "tile", "engine", "time", "in memory (median)", "into store (median)", "overhead"],
            [
                [
                    "pntk.kernel vs pntk.compute",
                    ov["n"],
                    ov["tile"],
                    ov["engine"],
                    "wall",
                    fmt_seconds(ov["median_memory_s"]),
                    fmt_seconds(ov["median_store_s"]),
                    f"{100 * ov['overhead']:+.1f} %",
                ],
                [
                    "",
                    "",
                    "",
                    "",
                    "CPU",
                    fmt_seconds(ov["median_memory_cpu_s"]),
                    fmt_seconds(ov["median_store_cpu_s"]),
                    f"{100 * ov['cpu_overhead']:+.1f} %",
                ],
            ],
        )
    )
    if not args.skip_large:
        report["large"] = lg = large(args.n, args.memory, args.engine, args.time_limit, args.dir, args.keep)
        rate = lg["entries_per_s"]
        print()
        compute_rate = lg["compute_entries_per_s"]
        print(
            harness.table(
                [
                    "large run",
                    "N",
                    "memory",
                    "tile",
                    "engine",
                    "tiles done",
                    "entries/s (wall)",
                    "entries/s (computing)",
                    "peak RSS",
                    "on disk",
                    "wall",
                    "projected total",
                    "status",
                ],
                [
                    [
                        f"{lg['entries_total']:.3g} entries",
                        lg["n"],
                        lg["memory"],
                        lg["tile"],
                        lg["engine"],
                        f"{lg['tiles_done']}/{lg['tiles_total']}",
                        f"{rate:.3g}" if rate else "—",
                        f"{compute_rate:.3g}" if compute_rate else "—",
                        fmt_bytes(lg["peak_rss_bytes"]),
                        fmt_bytes(lg["size_on_disk_bytes"]),
                        fmt_seconds(lg["wall_s"]),
                        fmt_seconds(lg.get("projected_total_s")),
                        lg["status"],
                    ]
                ],
            )
        )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2))
    print(f"\nwritten to {args.out}")


if __name__ == "__main__":
    main()
