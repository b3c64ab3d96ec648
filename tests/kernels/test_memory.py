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


def test_structured_block_bytes_count_what_a_block_holds():
    """On a sequence the structured engine's estimate follows its plan: a layer materialised because its ``T``
    positions make factors costlier holds ``R`` per-sample gradients, not one position's factors; a block
    holds what is estimated (up to the bias column that the Gram's width counts)."""
    from pntk.kernels import Inputs, Kind, functional_model
    from pntk.kernels.structured import StructuredEngine

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(16, 16), nn.Tanh(), nn.Flatten(), nn.Linear(16 * 8, 2))
    x = Inputs.from_user(torch.randn(5, 8, 16))
    fm = functional_model(model, x[:2])
    engine = StructuredEngine()
    for kind in (Kind.PNTK, Kind.ENTK):
        block = engine.prepare(fm, x, kind)
        held = sum(f.A.numel() + f.D.numel() for f in block.factors) + sum(J.numel() for J in block.J)
        assert held * 4 <= engine.block_bytes(fm, 5, kind) <= held * 4 * 1.01
        R = 1 if kind is Kind.PNTK else 2
        assert held >= R * 5 * (16 * 16 + 16)  # the first layer (T = 8) is materialised


def test_vp_activation_bytes_count_the_tensors_a_pass_creates():
    """One sample through Linear–ReLU–Linear creates three results; the transposed weights are views."""
    from pntk.kernels import Inputs, functional_model
    from pntk.kernels.vp import activation_bytes

    model = nn.Sequential(nn.Linear(40, 512), nn.ReLU(), nn.Linear(512, 10))
    fm = functional_model(model, Inputs.from_user(torch.randn(2, 40)))
    assert activation_bytes(fm) == 4 * (512 + 512 + 10)


@pytest.mark.parametrize("kind", ["pntk", "trace", "entk"])
def test_vp_columns_one_at_a_time_equal_the_jacobian_engine(kind):
    """A working memory too small for two columns vectorises one at a time, with the same tile."""
    from pntk.kernels import Inputs, Kind, functional_model
    from pntk.kernels.jacobian import JacobianEngine
    from pntk.kernels.structured import WorkingMemory
    from pntk.kernels.vp import VPEngine, column_chunk

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 5), nn.Tanh(), nn.Linear(5, 2)).double()
    a, b = Inputs.from_user(torch.randn(4, 3).double()), Inputs.from_user(torch.randn(3, 3).double())
    fm = functional_model(model, a[:2])
    tiny = WorkingMemory(contract_bytes=1)
    assert column_chunk(fm, 7, tiny) == 1
    k = Kind(kind)
    tile = VPEngine(tiny).contract(fm, a, b, k, same=False)
    jac = JacobianEngine()
    reference = jac.contract(fm, jac.prepare(fm, a, k), jac.prepare(fm, b, k), k, same=False)
    torch.testing.assert_close(tile, reference, rtol=1e-12, atol=1e-12)


def test_vp_activation_bytes_of_a_model_that_refuses_the_count_is_a_gradients_size(monkeypatch):
    """An operation that fails under the counting mode leaves the estimate at ``P`` numbers, not at zero."""
    from pntk.kernels import Inputs, functional_model, vp

    model = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 2))
    fm = functional_model(model, Inputs.from_user(torch.randn(2, 4)))

    def refuse(self, func, types, args=(), kwargs=None):
        raise NotImplementedError("no dispatch for this operation")

    monkeypatch.setattr(vp._CreatedBytes, "__torch_dispatch__", refuse)
    assert vp.activation_bytes(fm) == 4 * fm.num_params
    tile = pntk.kernel(model, torch.randn(5, 4), kind="pntk", engine="vp", memory="1MB")  # small chunks
    assert tile.shape == (5, 5)


def test_vp_activation_bytes_are_counted_on_the_path_with_gradients():
    """In eval mode without gradients nn.TransformerEncoderLayer takes a fused path whose only result is its
    output; the vector products run with gradients, through the feed-forward hidden layer among the rest."""
    from pntk.kernels import Inputs, functional_model
    from pntk.kernels.vp import activation_bytes

    torch.manual_seed(0)
    T, d, hidden = 6, 8, 32
    layer = nn.TransformerEncoderLayer(d, nhead=2, dim_feedforward=hidden, batch_first=True, dropout=0.0)
    model = nn.Sequential(layer, nn.Flatten(), nn.Linear(T * d, 2)).eval()
    fm = functional_model(model, Inputs.from_user(torch.randn(2, T, d)))
    assert activation_bytes(fm) >= 4 * T * (hidden + 2 * T + 4 * d)  # FFN hidden, attention weights, q, k, v, out
