"""Worker: one ``pntk.compute`` into a store, for ``bench_store.py`` to watch from outside (peak memory, time).

The job is JSON on stdin::

    {"n": 50000, "memory": "2GB", "out": "/tmp/k.zarr", "log": "/tmp/k.jsonl", "engine": "auto",
     "width": 256, "depth": 2, "threads": 2, "seed": 0}

The model is the zoo's MLP ``64 → width × depth → 10`` on digits-shaped ``[n, 1, 8, 8]`` random inputs.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402

import harness  # noqa: E402
from pntk.compute import compute  # noqa: E402
from pntk.models import build_model  # noqa: E402


def problem(n: int, width: int, depth: int, seed: int) -> tuple[torch.nn.Module, torch.Tensor]:
    """The benchmark's model (eval mode) and ``[n, 1, 8, 8]`` inputs."""
    model = build_model("mlp", width=width, depth=depth, in_shape=(1, 8, 8), num_classes=10, seed=seed)
    x = torch.randn(n, 1, 8, 8, generator=torch.Generator().manual_seed(seed))
    return model.eval(), x


def main() -> None:
    job = harness.read_job()
    torch.set_num_threads(job["threads"])
    model, x = problem(job["n"], job["width"], job["depth"], job["seed"])
    t0 = time.perf_counter()
    store = compute(
        model,
        x,
        kind="pntk",
        out=job["out"],
        memory=job["memory"],
        engine=job["engine"],
        log_json=job["log"],
        progress=False,
    )
    harness.emit({"seconds": time.perf_counter() - t0, "tile": store.spec.tile, "engine": store.spec.engine})


if __name__ == "__main__":
    main()
