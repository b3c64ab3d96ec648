"""Features written into a store by another process (subprocess, torchrun), for the feature store tests.

    python tests/features/feature_store_worker.py OUT [--kind K] [--sleep S] [--die-after K] [--differ-rank R]

``--sleep S`` sleeps in every block's sketch, so that a SIGKILL sent by a test lands mid-block; ``--die-after K``
makes the process SIGKILL itself once ``K`` of its blocks are recorded; ``--differ-rank R`` gives rank ``R``
other weights. They wrap the library from outside; it has no such hooks.
"""

from __future__ import annotations

import argparse
import os
import signal
import time

import torch

import pntk
from pntk.features import FeatureMap, FeatureStore

N, TILE, K = 23, 5, 64


def make_problem():
    """The model and inputs every process agrees on: a small float64 MLP with O = 3, ``[N, 5]`` inputs."""
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(5, 16), torch.nn.Tanh(), torch.nn.Linear(16, 3)).double().eval()
    return net, torch.randn(N, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(1))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("out")
    parser.add_argument("--kind", default="pntk")
    parser.add_argument("--sleep", type=float, default=0.0)
    parser.add_argument("--die-after", type=int, default=0)
    parser.add_argument("--differ-rank", type=int, default=-1)
    args = parser.parse_args()
    torch.set_num_threads(1)
    if args.sleep:
        call = FeatureMap.__call__

        def slow(self, *a, **k):
            time.sleep(args.sleep)
            return call(self, *a, **k)

        FeatureMap.__call__ = slow
    if args.die_after:
        write_tile, written = FeatureStore.write_tile, []

        def write_then_die(self, *a, **k):
            write_tile(self, *a, **k)
            written.append(1)
            if len(written) >= args.die_after:
                os.kill(os.getpid(), signal.SIGKILL)

        FeatureStore.write_tile = write_then_die
    model, x = make_problem()
    if int(os.environ.get("RANK", "0")) == args.differ_rank:
        with torch.no_grad():
            model[2].weight[0, 0] += 1e-3
    pntk.compute_features(model, x, k=K, kind=args.kind, seed=3, out=args.out, batch_size=TILE)


if __name__ == "__main__":
    main()
