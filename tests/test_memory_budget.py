"""Memory as promised: the peak memory that ``compute(memory=M)`` and ``kernel(memory=M)`` hold stays within
their budgets, and within the plan's estimate before its safety factor, measured in a subprocess
(tests/memory_worker.py) above the baseline of the interpreter, torch, the model, its inputs and a warm-up run."""

import json
import os
import subprocess
import sys
from functools import cache
from pathlib import Path

import pytest

WORKER = Path(__file__).parent / "memory_worker.py"
#: What a call holds that does not grow with the tile, beyond the baseline: the writer thread's stack and
#: allocator arena, Zarr's and torch.func's per-call objects. Measured at about 2 MB for 4 MB budgets.
FIXED = 4 << 20

pytestmark = pytest.mark.skipif(
    not Path("/proc/self/clear_refs").exists(), reason="needs Linux's /proc to reset and read the peak"
)


@cache
def measurements(model: str, workdir: str) -> dict[str, dict]:
    # Buffers from 64 KiB up are mapped and unmapped one by one, so that the peak counts held bytes, not the
    # heap's fragmentation (which the safety factor covers).
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": str(64 << 10)}
    run = subprocess.run(
        [sys.executable, str(WORKER), model, workdir], capture_output=True, text=True, timeout=600, check=False, env=env
    )
    assert run.returncode == 0, run.stderr[-3000:]
    return {r["case"]: r for r in map(json.loads, run.stdout.splitlines())}


CASES = [
    (model, case)
    for model in ("mlp", "convnet")
    for case in ("compute pntk", "compute entk", "kernel pntk", "kernel entk", "kernel pntk vp", "kernel entk vp")
]


@pytest.mark.parametrize("model, case", CASES)
def test_peak_memory_stays_within_the_budget(model, case, tmp_path_factory):
    workdir = tmp_path_factory.getbasetemp() / f"memory-{model}"
    result = measurements(model, str(workdir))[case]
    assert result["peak"] > 0, "the measurement saw no allocation at all"
    assert result["estimate"] <= result["budget"], "the plan's estimate exceeds its own budget"
    assert result["peak"] <= result["estimate"] + FIXED, (
        f"{model} {case}: peak {result['peak'] / 1e6:.1f} MB above the baseline, the plan's estimate "
        f"{result['estimate'] / 1e6:.1f} MB (budget {result['budget'] / 1e6:.1f} MB) + {FIXED / 1e6:.1f} MB fixed"
    )
