"""Properties every kernel has, over shapes drawn by hypothesis, for every engine."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import pntk
from pntk.kernels import ENGINES

ENGINE_NAMES = [e.value for e in ENGINES]


def make_mlp(n_in: int, O: int, seed: int) -> torch.nn.Module:
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(n_in, 6), torch.nn.Tanh(), torch.nn.Linear(6, O)).eval()


shapes = st.fixed_dictionaries(
    {
        "N1": st.integers(1, 9),
        "N2": st.integers(1, 7),
        "O": st.integers(1, 4),
        "n_in": st.integers(1, 5),
        "batch_size": st.integers(1, 10),
        "seed": st.integers(0, 2**16),
        "engine": st.sampled_from(ENGINE_NAMES),
    }
)
common = settings(max_examples=25, deadline=None)


def inputs(s):
    g = torch.Generator().manual_seed(s["seed"])
    return torch.randn(s["N1"], s["n_in"], generator=g), torch.randn(s["N2"], s["n_in"], generator=g)


@common
@given(shapes)
def test_symmetric_and_positive_semidefinite(s):
    model = make_mlp(s["n_in"], s["O"], s["seed"])
    x1, _ = inputs(s)
    opts = dict(engine=s["engine"], batch_size=s["batch_size"], dtype=torch.float64)
    K = pntk.pntk(model, x1, **opts)
    theta = pntk.entk(model, x1, **opts)
    N, O = s["N1"], s["O"]
    matrix = theta.permute(0, 2, 1, 3).reshape(N * O, N * O)  # row n·O + a
    assert torch.equal(K, K.T)
    assert torch.equal(matrix, matrix.T)
    scale = max(1.0, matrix.abs().max().item())
    assert torch.linalg.eigvalsh(K).min() >= -1e-10 * scale
    assert torch.linalg.eigvalsh(matrix).min() >= -1e-10 * scale


@common
@given(shapes)
def test_pntk_and_trace_are_means_over_entk_blocks(s):
    model = make_mlp(s["n_in"], s["O"], s["seed"])
    x1, x2 = inputs(s)
    opts = dict(engine=s["engine"], batch_size=s["batch_size"], dtype=torch.float64)
    theta = pntk.entk(model, x1, x2, **opts)
    assert theta.shape == (s["N1"], s["N2"], s["O"], s["O"])
    torch.testing.assert_close(pntk.pntk(model, x1, x2, **opts), theta.sum((2, 3)) / s["O"], rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(
        pntk.trace_ntk(model, x1, x2, **opts), theta.diagonal(dim1=2, dim2=3).mean(-1), rtol=1e-10, atol=1e-12
    )


@common
@given(shapes, st.sampled_from(["entk", "trace", "pntk"]))
def test_tiled_equals_untiled(s, kind):
    model = make_mlp(s["n_in"], s["O"], s["seed"])
    x1, x2 = inputs(s)
    opts = dict(kind=kind, engine=s["engine"], dtype=torch.float64)
    for args in [(x1,), (x1, x2)]:
        whole = pntk.kernel(model, *args, batch_size=64, **opts)
        tiled = pntk.kernel(model, *args, batch_size=s["batch_size"], **opts)
        torch.testing.assert_close(tiled, whole, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("engine", ENGINE_NAMES)
def test_symmetric_call_equals_cross_call_with_itself(engine):
    model = make_mlp(3, 2, 0)
    x = torch.randn(7, 3)
    opts = dict(engine=engine, dtype=torch.float64, batch_size=3)
    torch.testing.assert_close(pntk.entk(model, x, **opts), pntk.entk(model, x, x, **opts), rtol=1e-12, atol=1e-12)
