"""The tile edge bounds memory: no engine ever prepares more than ``batch_size`` samples at once."""

import pytest
import torch
from torch import nn

import pntk
from pntk.kernels import ENGINES


@pytest.mark.parametrize("engine", [e.value for e in ENGINES])
@pytest.mark.parametrize("symmetric", [True, False])
def test_blocks_never_exceed_batch_size(monkeypatch, engine, symmetric):
    cls = type(ENGINES[pntk.Engine(engine)])  # a plan may configure its own instance of the engine
    seen = []
    prepare = cls.prepare

    def recording(self, fm, x, kind):
        seen.append(len(x))
        return prepare(self, fm, x, kind)

    monkeypatch.setattr(cls, "prepare", recording)
    model = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2))
    x1 = torch.randn(11, 3)
    pntk.pntk(model, x1, None if symmetric else torch.randn(7, 3), engine=engine, batch_size=4)
    assert max(seen) <= 4
    # Each of the 3 row blocks is prepared once, plus one column block per tile; a symmetric diagonal
    # tile reuses its row block, leaving the 3 tiles above the diagonal of the 3 × 3 grid.
    column_preparations = 3 if symmetric else 3 * 2
    assert len(seen) == 3 + column_preparations
