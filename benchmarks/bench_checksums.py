"""What tile checksums cost on the store benchmark's workload, one tile at a time.

Usage (from the repository root)::

    .venv/bin/python benchmarks/bench_checksums.py [--n 50000] [--memory 2GB] [--threads 2] [--dir /tmp]
        [--out benchmarks/out/checksums.json]

On ``bench_store.py``'s problem (the zoo's MLP 64-256-256-10, ``[N, 1, 8, 8]`` inputs, pNTK, symmetric) with the
tile that ``pntk.compute(memory=...)`` plans for ``N``, it times, for one tile above the diagonal (two chunks,
the tile and its mirror image):

- computing it (both row and column blocks prepared, then contracted), as ``compute`` does for a new row;
- writing it durably into a store with checksums (``KernelStore.write_tile``: Zarr's crc32c codec, fsync,
  the ledger entry with sizes and checksums), and into a plain Zarr array of the same chunks without them;
- checking it as ``verify`` does (read both chunk files, CRC32C) and as a read does (``K[rows, cols]``).

Writes run in a background thread while the next tile is computed, so the checksum's cost in wall time is at
most ``(checked write − plain write) / compute``; ``verify`` on resume adds ``verify / compute`` per finished
tile once. Nothing here asserts a time; the figures go to stdout and to ``--out`` as JSON.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402
import zarr  # noqa: E402

from compute_worker import problem  # noqa: E402
from pntk.compute import plan_tile  # noqa: E402
from pntk.kernels import Kind, functional_model  # noqa: E402
from pntk.kernels.api import iter_tiles  # noqa: E402
from pntk.kernels.inputs import Inputs  # noqa: E402
from pntk.store import KernelSpec, KernelStore  # noqa: E402
from pntk.tiling import tile_plan  # noqa: E402

WIDTH, DEPTH, SEED = 256, 2, 0


def seconds(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=50_000)
    parser.add_argument("--memory", default="2GB")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--dir", type=Path, default=Path(tempfile.gettempdir()))
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    model, x = problem(args.n, WIDTH, DEPTH, SEED)
    fm = functional_model(model, Inputs((x[:2],)))
    eng, tile = plan_tile(fm, Kind.PNTK, args.n, memory=args.memory)
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
    try:
        spec = KernelSpec(Kind.PNTK, args.n, args.n, 10, "float32", True, eng.name, tile, "m", "d", None)
        store = KernelStore.create(workdir / "checked.zarr", spec)
        checked_s = seconds(lambda: store.write_tile(t, values))
        plain = zarr.create_array(
            str(workdir / "plain.zarr"), shape=spec.shape, chunks=(tile, tile), dtype="float32", compressors=None
        )

        def plain_write() -> None:
            plain[t.rows, t.cols] = values.numpy()
            plain[t.cols, t.rows] = values.T.contiguous().numpy()

        plain_s = seconds(plain_write)
        reader = KernelStore(workdir / "checked.zarr")
        verify_s = seconds(reader.verify)
        read_checked_s = seconds(lambda: reader[t.rows, t.cols])
        read_plain_s = seconds(lambda: plain[t.rows, t.cols])
        assert reader.verify().ok and reader.verify().checked == 1
    finally:
        shutil.rmtree(workdir, ignore_errors=True)

    result = {
        "n": args.n,
        "memory": args.memory,
        "tile": tile,
        "engine": eng.name,
        "threads": args.threads,
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
