"""A kernel computation for the store tests to run in other processes (subprocess, torchrun).

    python tests/store_worker.py OUT --kind pntk [--sleep S] [--die-rank R --die-after K] [--tile T]
        [--differ-rank R --differ weights|data|tile]

``--sleep S`` sleeps inside every tile's contraction, so that a SIGKILL sent by a test lands mid-tile;
``--die-rank R --die-after K`` makes rank ``R`` SIGKILL itself once ``K`` of its tiles are recorded. Both
wrap the library from outside, as a test would; the library has no such hooks. ``--differ-rank R --differ
what`` gives rank ``R`` other weights (as an unseeded factory would), other inputs, or another tile.
"""

from __future__ import annotations

import argparse
import importlib
import os
import signal
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))

from pntk.store import KernelStore  # noqa: E402
from zoo import make_case  # noqa: E402

N, TILE = 23, 5


def make_problem(n: int = N):
    """The model and inputs every test process agrees on: zoo's MLP with O = 4, ``[n, 5]`` inputs."""
    model, make_inputs = make_case("mlp", seed=0)
    return model, make_inputs(n, torch.Generator().manual_seed(1))


class SlowEngine:
    """An engine that sleeps inside each contraction."""

    def __init__(self, inner, seconds: float):
        self.inner, self.seconds, self.name = inner, seconds, inner.name

    def prepare(self, *args, **kwargs):
        return self.inner.prepare(*args, **kwargs)

    def contract(self, *args, **kwargs):
        time.sleep(self.seconds)
        return self.inner.contract(*args, **kwargs)

    def block_bytes(self, *args, **kwargs):
        return self.inner.block_bytes(*args, **kwargs)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("out")
    parser.add_argument("--kind", default="pntk")
    parser.add_argument("--tile", type=int, default=TILE)
    parser.add_argument("--sleep", type=float, default=0.0)
    parser.add_argument("--die-rank", type=int, default=-1)
    parser.add_argument("--die-after", type=int, default=0)
    parser.add_argument("--differ-rank", type=int, default=-1)
    parser.add_argument("--differ", choices=["weights", "data", "tile"], default="weights")
    args = parser.parse_args()
    torch.set_num_threads(1)

    # The module, not the function pntk.compute that the package exports under the same name.
    compute_module = importlib.import_module("pntk.compute")
    if args.sleep:
        engine_of = compute_module.engine_of
        compute_module.engine_of = lambda *a, **k: SlowEngine(engine_of(*a, **k), args.sleep)
    if int(os.environ.get("RANK", "0")) == args.die_rank:
        write_tile, written = KernelStore.write_tile, []

        def write_then_die(self, *a, **k):
            write_tile(self, *a, **k)
            written.append(1)
            if len(written) >= args.die_after:
                os.kill(os.getpid(), signal.SIGKILL)

        KernelStore.write_tile = write_then_die

    model, x = make_problem()
    if int(os.environ.get("RANK", "0")) == args.differ_rank:
        if args.differ == "weights":
            with torch.no_grad():
                model[2].weight[0, 0] += 1e-3
        elif args.differ == "data":
            x[7, 1] += 1e-3
        else:
            args.tile += 1
    compute_module.compute(model, x, kind=args.kind, out=args.out, batch_size=args.tile)


if __name__ == "__main__":
    main()
