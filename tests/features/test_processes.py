"""Rows of Φ do not depend on the process that computes them: the projection is drawn from the seed and the
layer's name (a stable hash, not Python's salted ``hash``), so two processes sharing the samples between them
write exactly the rows one process writes."""

import os
import subprocess
import sys

import numpy as np
import torch

import pntk

SCRIPT = """
import sys, numpy as np, torch, pntk
torch.manual_seed(0)
net = torch.nn.Sequential(torch.nn.Conv1d(1, 3, 5), torch.nn.ReLU(), torch.nn.Flatten(), torch.nn.Linear(3 * 36, 4))
net = net.double().eval()
x = torch.from_numpy(np.load(sys.argv[1]))
rows = slice(int(sys.argv[2]), int(sys.argv[3]))
for kind in ("pntk", "entk"):
    Phi = pntk.features(net, x[rows], k=128, kind=kind, seed=7, batch_size=3)
    np.save(sys.argv[4] + f"-{kind}.npy", Phi.numpy())
"""


def test_two_processes_write_the_rows_of_one(tmp_path):
    x = torch.randn(12, 1, 40, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    np.save(tmp_path / "x.npy", x.numpy())
    for r, (start, stop) in enumerate([(0, 6), (6, 12)]):
        subprocess.run(
            [sys.executable, "-c", SCRIPT, str(tmp_path / "x.npy"), str(start), str(stop), str(tmp_path / f"phi-{r}")],
            check=True,
            env={**os.environ, "PYTHONHASHSEED": str(r + 1)},  # different string hashes in each process
        )
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv1d(1, 3, 5), torch.nn.ReLU(), torch.nn.Flatten(), torch.nn.Linear(3 * 36, 4))
    net = net.double().eval()
    for kind in ("pntk", "entk"):
        fmap = pntk.features.FeatureMap(net, k=128, kind=kind, seed=7)
        # The same chunks as the two processes used: rows 0-2, 3-5 | 6-8, 9-11.
        whole = torch.cat([fmap(x[:6], batch_size=3), fmap(x[6:], batch_size=3)]).numpy()
        parts = [np.load(tmp_path / f"phi-{r}-{kind}.npy") for r in (0, 1)]
        assert np.array_equal(np.concatenate(parts), whole)
