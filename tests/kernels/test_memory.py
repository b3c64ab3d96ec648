"""The tile edge bounds memory: no engine ever prepares more than ``batch_size`` samples at once."""

import pytest
import torch
from torch import nn

import pntk
from pntk.kernels import ENGINES, Kind, default_batch_size, functional_model
from pntk.kernels.api import BLOCK_MEMORY
from pntk.kernels.inputs import Inputs


@pytest.mark.parametrize("engine", [e.value for e in ENGINES])
@pytest.mark.parametrize("symmetric", [True, False])
def test_blocks_never_exceed_batch_size(monkeypatch, engine, symmetric):
    eng = ENGINES[pntk.Engine(engine)]
    seen = []
    prepare = eng.prepare

    def recording(fm, x, kind):
        seen.append(len(x))
        return prepare(fm, x, kind)

    monkeypatch.setattr(eng, "prepare", recording)
    model = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2))
    x1 = torch.randn(11, 3)
    pntk.pntk(model, x1, None if symmetric else torch.randn(7, 3), engine=engine, batch_size=4)
    assert max(seen) <= 4
    # Each of the 3 row blocks is prepared once, plus one column block per tile; a symmetric diagonal
    # tile reuses its row block, leaving the 3 tiles above the diagonal of the 3 × 3 grid.
    column_preparations = 3 if symmetric else 3 * 2
    assert len(seen) == 3 + column_preparations


def test_default_batch_size_fits_the_block_budget():
    """A 1M-parameter model's 4,000-sample kernel is cut so that two blocks of gradients fit the budget."""
    model = nn.Sequential(nn.Linear(1000, 1000), nn.ReLU(), nn.Linear(1000, 10))
    fm = functional_model(model, Inputs((torch.randn(2, 1000),)))
    assert fm.num_params == 1_011_010
    for kind in Kind:
        B = default_batch_size(fm, kind, 4000, "jacobian")
        rows = 1 if kind is Kind.PNTK else 10
        assert 1 <= B < 4000
        assert 2 * B * rows * fm.num_params * 4 <= BLOCK_MEMORY


def test_a_symmetric_kernel_whose_block_fits_is_one_tile(monkeypatch):
    """With room for one block of all n samples but not two, ``x2 = None`` takes a single diagonal tile."""
    from pntk.kernels import api

    model = nn.Sequential(nn.Linear(100, 100), nn.ReLU(), nn.Linear(100, 10))
    fm = functional_model(model, Inputs((torch.randn(2, 100),)))
    n, jacobian = 300, ENGINES[pntk.Engine.JACOBIAN]
    one_tile = api.tile_bytes(fm, jacobian, Kind.PNTK, n, blocks=1)
    monkeypatch.setattr(api, "BLOCK_MEMORY", one_tile)
    assert default_batch_size(fm, Kind.PNTK, n, "jacobian", symmetric=True) == n
    assert default_batch_size(fm, Kind.PNTK, n, "jacobian") < n / 1.9
