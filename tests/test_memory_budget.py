"""Memory as promised: the peak resident memory of ``compute(memory=M)`` and of the kernel functions stays
within their budgets, measured in a subprocess (tests/memory_worker.py) above the baseline of the
interpreter, torch, the model, its inputs and a warm-up run."""

import json
import subprocess
import sys
from functools import cache
from pathlib import Path

import pytest

WORKER = Path(__file__).parent / "memory_worker.py"
#: What a call holds that does not grow with the tile, beyond the baseline: the writer thread's stack and
#: allocator arena, Zarr's and torch.func's per-call objects. Measured at about 2 MB for 4 MB budgets.
FIXED = 8 << 20

pytestmark = pytest.mark.skipif(
    not Path("/proc/self/clear_refs").exists(), reason="needs Linux's /proc to reset and read the peak"
)


@cache
def measurements(model: str, workdir: str) -> dict[str, dict]:
    run = subprocess.run(
        [sys.executable, str(WORKER), model, workdir], capture_output=True, text=True, timeout=600, check=False
    )
    assert run.returncode == 0, run.stderr[-3000:]
    return {r["case"]: r for r in map(json.loads, run.stdout.splitlines())}


CASES = [
    (model, case)
    for model in ("mlp", "convnet")
    for case in ("compute pntk", "compute entk", "kernel pntk", "kernel entk")
]


@pytest.mark.parametrize("model, case", CASES)
def test_peak_memory_stays_within_the_budget(model, case, tmp_path_factory):
    workdir = tmp_path_factory.getbasetemp() / f"memory-{model}"
    result = measurements(model, str(workdir))[case]
    assert result["peak"] > 0, "the measurement saw no allocation at all"
    assert result["peak"] <= result["budget"] + FIXED, (
        f"{model} {case}: peak {result['peak'] / 1e6:.1f} MB above the baseline, budget "
        f"{result['budget'] / 1e6:.1f} MB + {FIXED / 1e6:.1f} MB fixed"
    )
