"""What tile checksums cost on the store benchmark's workload, one tile at a time.

Usage (from the repository root)::

    .venv/bin/python benchmarks/bench_checksums.py [--n 50000] [--memory 2GB] [--threads 2] [--dir /tmp]
        [--out benchmarks/out/checksums.json]

On ``bench_store.py``'s problem (the zoo's MLP 64-256-256-10, ``[N, 1, 8, 8]`` inputs, pNTK, symmetric) with the
tile that ``pntk.compute(memory=...)`` plans for ``N``, it times, for one tile above the diagonal (two chunks,
the tile and its mirror image):

- computing it (both row and column blocks prepared, then contracted), as ``compute`` does for a new row;
- writing it durably (``KernelStore.write_tile``: chunks, fsync, ledger entry) into a store with checksums
  (Zarr's crc32c codec, sizes and checksums in the ledger) and into one with raw chunks, as before them;
- checking it as ``verify`` does (read both chunk files, CRC32C) and reading it (``K[rows, cols]``) against a
  plain Zarr read of the raw store.

Medians of ``--repeats`` runs (compute once).

Writes run in a background thread while the next tile is computed, so the checksum's cost in wall time is at
most ``(checked write − plain write) / compute``; ``verify`` on resume adds ``verify / compute`` per finished
tile once. Nothing here asserts a time; the figures go to stdout and to ``--out`` as JSON.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402
import zarr  # noqa: E402

from compute_worker import problem  # noqa: E402
from pntk.kernels import Kind, functional_model  # noqa: E402
from pntk.kernels.api import iter_tiles  # noqa: E402
from pntk.kernels.inputs import Inputs  # noqa: E402
from pntk.planning import engine_of, plan  # noqa: E402
from pntk.store import KernelSpec, KernelStore  # noqa: E402
from pntk.tiling import tile_plan  # noqa: E402

WIDTH, DEPTH, SEED = 256, 2, 0


@contextmanager
def without_checksums() -> Iterator[None]:
    """Stores created inside have raw chunks, as before checksums: the same durable writes otherwise."""
    create = zarr.create_array

    def raw(*args, **kwargs):
        return create(*args, **{**kwargs, "compressors": None})

    zarr.create_array = raw
    try:
        yield
    finally:
        zarr.create_array = create


def seconds(fn, *args) -> float:
    start = time.perf_counter()
    fn(*args)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=50_000)
    parser.add_argument("--memory", default="2GB")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--dir", type=Path, default=Path(tempfile.gettempdir()))
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    model, x = problem(args.n, WIDTH, DEPTH, SEED)
    fm = functional_model(model, Inputs((x[:2],)))
    planned = plan(model, x, kind="pntk", memory=args.memory, executor="store")
    eng, tile = engine_of(planned), planned.tile
    t = next(t for t in tile_plan(args.n, args.n, tile, symmetric=True) if t.i == 0 and t.j == 1)

    def rows(s: slice) -> Inputs:
        return Inputs((x[s],))

    values = None

    def compute_tile() -> None:
        nonlocal values
        ((_, values),) = iter_tiles(eng, fm, [t], rows, rows, Kind.PNTK, symmetric=True)

    compute_s = seconds(compute_tile)
    assert values is not None

    workdir = Path(tempfile.mkdtemp(dir=args.dir))
    spec = KernelSpec(Kind.PNTK, args.n, args.n, 10, "float32", True, eng.name, tile, "m", "d", None)
    timings: dict[str, list[float]] = {k: [] for k in ("checked", "plain", "verify", "read_checked", "read_plain")}
    try:
        for r in range(args.repeats):
            checked = KernelStore.create(workdir / f"checked{r}.zarr", spec)
            timings["checked"].append(seconds(checked.write_tile, t, values))
            with without_checksums():
                plain = KernelStore.create(workdir / f"plain{r}.zarr", spec)
            timings["plain"].append(seconds(plain.write_tile, t, values))
            reader = KernelStore(workdir / f"checked{r}.zarr")
            timings["verify"].append(seconds(reader.verify))
            timings["read_checked"].append(seconds(reader.__getitem__, (t.rows, t.cols)))
            plain_reader = zarr.open_array(str(workdir / f"plain{r}.zarr"), mode="r")
            timings["read_plain"].append(seconds(plain_reader.__getitem__, (t.rows, t.cols)))
            assert reader.verify().ok and reader.verify().checked == 1
            shutil.rmtree(workdir / f"checked{r}.zarr")
            shutil.rmtree(workdir / f"plain{r}.zarr")
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    checked_s, plain_s, verify_s, read_checked_s, read_plain_s = (statistics.median(v) for v in timings.values())

    result = {
        "n": args.n,
        "memory": args.memory,
        "tile": tile,
        "engine": eng.name,
        "threads": args.threads,
        "repeats": args.repeats,
        "tile_bytes": values.numel() * 4,
        "compute_s": compute_s,
        "write_checked_s": checked_s,
        "write_plain_s": plain_s,
        "verify_s": verify_s,
        "read_checked_s": read_checked_s,
        "read_plain_s": read_plain_s,
        "write_overhead_of_compute": (checked_s - plain_s) / compute_s,
        "verify_of_compute": verify_s / compute_s,
    }
    for name, value in result.items():
        print(f"{name:>28}  {value:.4g}" if isinstance(value, float) else f"{name:>28}  {value}")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
