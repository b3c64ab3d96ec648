"""Peak memory of pntk's kernel paths, measured in this process for tests/test_memory_budget.py.

    python tests/memory_worker.py MODEL OUT_DIR

For each case it resets the peak resident size (``/proc/self/clear_refs``), notes the resident size as the
baseline (interpreter, torch, the model, its inputs and a warm-up run on a few samples), runs the case, and
prints one JSON line: the case, the peak above the baseline (``VmHWM − VmRSS`` before), the budget and the
plan's estimate of its tile work before the safety factor (plus the kernel returned, for ``kernel()``).

Run it with ``MALLOC_MMAP_THRESHOLD_=65536`` (as the test does): every buffer from 64 KiB up is then its own
mapping, returned when freed, so the peak counts the bytes pntk holds. With glibc's default, the heap's
fragmentation adds up to about 5 MB at a 32 MB budget, from run to run — that is what the safety factor is for.
"""

from __future__ import annotations

import ctypes
import gc
import json
import sys
from pathlib import Path

import torch

from pntk.compute import compute
from pntk.kernels import Kind, kernel
from pntk.models import build_model
from pntk.planning import DEFAULT_OPTIONS, plan
from pntk.tiling import parse_bytes

#: model: (width, N of the pNTK, N of the eNTK, memory)
CASES = {
    "mlp": (256, 3200, 320, "32MB"),
    "convnet": (8, 3200, 320, "32MB"),
}
#: Samples of the vector-product engine's pNTK (a tenth for the eNTK), which costs a pass per column.
VP_SAMPLES = 400


def status(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no {field} in /proc/self/status")


def measure(name: str, budget: int, estimate: int, run) -> None:
    gc.collect()
    ctypes.CDLL("libc.so.6").malloc_trim(0)  # so that memory freed before does not hide new allocations
    Path("/proc/self/clear_refs").write_text("5")  # VmHWM := VmRSS
    baseline = status("VmRSS")
    run()
    peak = status("VmHWM") - baseline
    print(json.dumps({"case": name, "peak": peak, "budget": budget, "estimate": estimate}), flush=True)


def main() -> None:
    model_name, out = sys.argv[1], Path(sys.argv[2])
    torch.set_num_threads(1)
    width, n_pntk, n_entk, memory = CASES[model_name]
    model = build_model(model_name, width=width, in_shape=(1, 8, 8), num_classes=10, seed=0).eval()
    x = torch.randn(n_pntk, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    for kind in ("pntk", "entk"):  # warm-up: every code path once, on a few samples
        compute(model, x[:6], kind=kind, out=out / f"warm-{kind}.zarr", batch_size=3)
        kernel(model, x[:6], kind=kind, batch_size=3)
        kernel(model, x[:6], kind=kind, batch_size=3, engine="vp")
    for kind, n in ((Kind.PNTK, n_pntk), (Kind.ENTK, n_entk)):
        planned = plan(model, x[:n], kind=kind, memory=memory, executor="store")
        measure(
            f"compute {kind.value}",
            parse_bytes(memory),
            int(planned.tile_bytes / DEFAULT_OPTIONS.safety),
            lambda n=n, kind=kind: compute(model, x[:n], kind=kind, out=out / f"{kind.value}.zarr", memory=memory),
        )
    for kind, n in ((Kind.PNTK, n_pntk), (Kind.ENTK, n_entk)):
        # The budget covers the tile work; the kernel returned comes on top.
        planned = plan(model, x[:n], kind=kind, memory=memory)
        measure(
            f"kernel {kind.value}",
            planned.kernel_bytes + parse_bytes(memory),
            planned.kernel_bytes + int(planned.tile_bytes / DEFAULT_OPTIONS.safety),
            lambda n=n, kind=kind: kernel(model, x[:n], kind=kind, memory=memory),
        )
    # Vector products hold no prepared blocks but a chunk of parameter-space vectors and their passes' activations.
    for kind, n in ((Kind.PNTK, VP_SAMPLES), (Kind.ENTK, VP_SAMPLES // 10)):
        planned = plan(model, x[:n], kind=kind, memory=memory, engine="vp")
        measure(
            f"kernel {kind.value} vp",
            planned.kernel_bytes + parse_bytes(memory),
            planned.kernel_bytes + int(planned.tile_bytes / DEFAULT_OPTIONS.safety),
            lambda n=n, kind=kind: kernel(model, x[:n], kind=kind, memory=memory, engine="vp"),
        )


if __name__ == "__main__":
    main()
