"""The kernel operator equals the dense kernel times V, in float64, for every kind, engine and model."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.sparse.linalg
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

import pntk
from pntk.kernels.structured import plan as structured_plan
from pntk.operators import KernelOperator, plan_product
from reference import reference_kernel
from zoo import CASES, make_case

KINDS = ["pntk", "trace", "entk"]
TOL = 1e-10


def as_matrix(K: torch.Tensor) -> torch.Tensor:
    """A kernel as the matrix the operator represents: ``[N1·O, N2·O]`` (row ``n·O + a``) for the eNTK."""
    if K.dim() == 4:
        N1, N2, O, _ = K.shape
        return K.permute(0, 2, 1, 3).reshape(N1 * O, N2 * O)
    return K


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a - b).abs().max() / b.abs().max().clamp(min=1e-300)).item()


class Embed(nn.Module):
    """Token ids (0 is padding) through an embedding, then a dense head."""

    def __init__(self, out: int = 3):
        super().__init__()
        self.emb = nn.Embedding(7, 5, padding_idx=0)
        self.head = nn.Linear(5, out)

    def forward(self, ids):
        return self.head(torch.tanh(self.emb(ids)).mean(1))


class DictInputs(nn.Module):
    """Keyword inputs ``image`` and ``meta``; a linear layer on tokens (``T = 2`` positions)."""

    def __init__(self, out: int = 3):
        super().__init__()
        self.tok = nn.Linear(3, 4)
        self.meta = nn.Linear(2, 8)
        self.head = nn.Linear(8, out)

    def forward(self, image, meta):
        return self.head(torch.tanh(self.tok(image).flatten(1) + self.meta(meta)))


class ScaledLinear(nn.Linear):
    """NTK-parametrised: ``forward = F.linear(x, weight·weight_scale, bias·bias_scale)``."""

    def __init__(self, n: int, m: int):
        super().__init__(n, m)
        self.weight_scale, self.bias_scale = 1.7 / math.sqrt(n), 0.1

    def forward(self, x):
        return F.linear(x, self.weight * self.weight_scale, self.bias * self.bias_scale)


def extra_case(name: str):
    torch.manual_seed(0)
    if name == "embedding":
        model = Embed().eval()

        def make(n, g):
            ids = torch.randint(0, 7, (n, 4), generator=g)
            ids[0, :2] = 0
            return ids

        return model, make
    if name == "dict_inputs":
        return DictInputs().eval(), lambda n, g: {
            "image": torch.randn(n, 2, 3, generator=g),
            "meta": torch.randn(n, 2, generator=g),
        }
    if name == "ntk_scaled":
        model = nn.Sequential(ScaledLinear(4, 6), nn.Tanh(), ScaledLinear(6, 3)).eval()
        return model, lambda n, g: torch.randn(n, 4, generator=g)
    raise KeyError(name)


EXTRA = ["embedding", "dict_inputs", "ntk_scaled"]
MODELS = [*CASES, *EXTRA]


def problem(name: str, n1: int = 7, n2: int = 4):
    model, make = make_case(name) if name in CASES else extra_case(name)
    g = torch.Generator().manual_seed(1)
    x1, x2 = make(n1, g), make(n2, g)
    return model.double(), to64(x1), to64(x2)


def to64(x):
    if isinstance(x, dict):
        return {k: to64(v) for k, v in x.items()}
    if isinstance(x, tuple):
        return tuple(map(to64, x))
    return x.double() if x.is_floating_point() else x


IMAGES = {"cnn_pool", "residual", "batchnorm_eval", "group_layer_norm"}
CASES_BY_ENGINE = [
    pytest.param(name, engine, marks=[pytest.mark.slow] if engine == "vp" and name in IMAGES else [])
    for name in MODELS
    for engine in ("structured", "vp")
]


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize(("name", "engine"), CASES_BY_ENGINE)
def test_product_equals_dense_kernel_times_V(name, kind, engine):
    model, x1, x2 = problem(name, 6, 4)
    g = torch.Generator().manual_seed(2)
    for b in (None, x2):
        op = pntk.operator(model, x1, b, kind=kind, engine=engine, batch_size=3)
        K = as_matrix(pntk.kernel(model, x1, b, kind=kind, engine="jacobian"))
        assert op.shape == tuple(K.shape) and op.dtype == torch.float64
        V = torch.randn(op.shape[1], 5, generator=g, dtype=torch.float64)
        assert rel_err(op @ V, K @ V) <= TOL, (b is None,)
        assert rel_err(op @ V[:, 0], K @ V[:, 0]) <= TOL
        U = torch.randn(op.shape[0], 2, generator=g, dtype=torch.float64)
        assert rel_err(op.T @ U, K.T @ U) <= TOL
        if b is None:
            assert rel_err(op.diagonal(), K.diagonal()) <= TOL


@pytest.mark.parametrize("form", ["factored", "materialised"])
@pytest.mark.parametrize("name", ["cnn_pool", "residual", "batchnorm_eval", "shared_layer", "embedding"])
def test_both_forms_of_the_structured_factors(name, form, monkeypatch):
    """Every factorable layer forced into one form: the factored products and the materialised gradients."""
    monkeypatch.setattr(structured_plan, "factored_cost", lambda *args: 0 if form == "factored" else math.inf)
    model, x1, x2 = problem(name, 5, 3)
    g = torch.Generator().manual_seed(3)
    for kind in KINDS:
        op = pntk.operator(model, x1, x2, kind=kind, engine="structured", batch_size=2)
        K = as_matrix(pntk.kernel(model, x1, x2, kind=kind, engine="jacobian"))
        V = torch.randn(op.shape[1], 3, generator=g, dtype=torch.float64)
        assert rel_err(op @ V, K @ V) <= TOL, kind


def test_against_the_brute_force_reference_directly():
    model, x1, x2 = problem("mlp_O10")
    for kind in KINDS:
        K = as_matrix(reference_kernel(model, x1, None, kind))
        V = torch.randn(K.shape[1], 2, dtype=torch.float64)
        for engine in ("structured", "vp"):
            assert rel_err(pntk.operator(model, x1, kind=kind, engine=engine) @ V, K @ V) <= TOL


def test_entk_operand_shapes_keep_their_layout():
    model, x1, x2 = problem("mlp")
    O = 4
    op = pntk.operator(model, x1, x2, kind="entk")
    Theta = pntk.entk(model, x1, x2)  # [7, 4, O, O]
    V = torch.randn(4, O, 3, dtype=torch.float64)
    expected = torch.einsum("nmab,mbk->nak", Theta, V)
    assert (op @ V).shape == (7, O, 3) and rel_err(op @ V, expected) <= TOL
    assert (op @ V[..., 0]).shape == (7, O) and rel_err(op @ V[..., 0], expected[..., 0]) <= TOL
    assert (op @ V.reshape(4 * O, 3)).shape == (7 * O, 3)
    assert (op @ V[..., 0].reshape(-1)).shape == (7 * O,)
    with pytest.raises(ValueError, match=r"pass \[16\], \[16, k\], \[4, 4\] or \[4, 4, k\]"):
        op @ torch.randn(5, O, dtype=torch.float64)


def test_numpy_scipy_and_dense_views():
    model, x1, _ = problem("mlp")
    op = pntk.operator(model, x1)
    K = pntk.pntk(model, x1)
    v = np.random.default_rng(0).standard_normal(7)
    out = op @ v
    assert isinstance(out, np.ndarray) and np.allclose(out, K.numpy() @ v, rtol=0, atol=1e-12)
    S = op.to_scipy()
    assert isinstance(S, scipy.sparse.linalg.LinearOperator) and S.shape == (7, 7)
    assert np.allclose(S.matvec(v), K.numpy() @ v, rtol=0, atol=1e-12)
    assert np.allclose(S.rmatvec(v), K.numpy().T @ v, rtol=0, atol=1e-12)
    assert rel_err(op.to_dense(chunk=3), K) <= TOL
    w = scipy.sparse.linalg.eigsh(S, k=2, return_eigenvectors=False)
    assert np.allclose(np.sort(w), np.linalg.eigvalsh(K.numpy())[-2:], rtol=1e-9)


@settings(max_examples=12, deadline=None)
@given(
    n1=st.integers(1, 9),
    n2=st.integers(1, 6),
    batch_size=st.integers(1, 10),
    k=st.integers(1, 40),
    symmetric=st.booleans(),
)
def test_any_chunking_and_column_count_gives_the_same_product(n1, n2, batch_size, k, symmetric):
    model, x1, x2 = problem("mlp", n1, n2)
    b = None if symmetric else x2
    op = pntk.operator(model, x1, b, kind="trace", batch_size=batch_size)
    K = pntk.trace_ntk(model, x1, b)
    V = torch.randn(op.shape[1], k, dtype=torch.float64)
    assert rel_err(op @ V, K @ V) <= TOL


def test_factors_are_cached_only_when_they_fit_the_budget():
    model, x1, _ = problem("mlp")
    cached = pntk.operator(model, x1, batch_size=3)
    assert cached.plan.cache
    V = torch.randn(7, 2, dtype=torch.float64)
    first = cached @ V
    assert len(cached.rows.blocks) == 3  # chunks of 3, 3, 1
    assert torch.equal(cached @ V, first)
    tight = pntk.operator(model, x1, batch_size=3, memory=8 * cached.plan.sample_bytes)
    assert not tight.plan.cache
    assert rel_err(tight @ V, first) <= TOL and not tight.rows.blocks


def test_plan_respects_the_budget():
    model, x1, _ = problem("mlp_O10")
    fm = pntk.kernels.functional_model(model, pntk.kernels.Inputs((x1,)))
    plan = plan_product(fm, pntk.Kind.ENTK, 10**6, memory="64MB")
    assert not plan.cache
    per_sample = plan.sample_bytes + 2 * plan.columns * plan.column_bytes
    assert plan.column_bytes < plan.sample_bytes  # the eNTK's factors hold O cotangents, a column's one
    assert plan.chunk * per_sample <= plan.memory // 4 < (plan.chunk + 1) * per_sample


def test_float32_products_follow_the_model_dtype():
    model, make = make_case("mlp")
    x = make(6, torch.Generator().manual_seed(0))
    op = pntk.operator(model, x)
    assert op.dtype == torch.float32 and op.device == torch.device("cpu")
    K = pntk.pntk(model, x, dtype=torch.float64)
    v = torch.randn(6)
    assert rel_err((op @ v).double(), K @ v.double()) <= 1e-5


def test_bad_input_gets_a_clear_error():
    model, x1, x2 = problem("mlp")
    with pytest.raises(ValueError, match="engine 'structured' or 'vp'"):
        pntk.operator(model, x1, engine="jacobian")
    with pytest.raises(ValueError, match="unknown kind"):
        pntk.operator(model, x1, kind="ntk")
    op = pntk.operator(model, x1, x2)
    with pytest.raises(ValueError, match="only for x2 = None"):
        op.diagonal()
    with pytest.raises(ValueError, match=r"pass \[4\] or \[4, k\]"):
        op @ torch.randn(7, dtype=torch.float64)
    with pytest.raises(ValueError, match="batch_size"):
        pntk.operator(model, x1, batch_size=0)
    assert isinstance(op, KernelOperator) and op.T.shape == (4, 7)


@pytest.mark.parametrize("engine", ["structured", "vp"])
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("name", ["mlp", "batchnorm_eval", "embedding"])
def test_columns_equal_the_dense_kernel_columns(name, kind, engine):
    model, x1, x2 = problem(name)
    for b in (None, x2):
        op = pntk.operator(model, x1, b, kind=kind, engine=engine, batch_size=3)
        K = as_matrix(pntk.kernel(model, x1, b, kind=kind, engine="jacobian"))
        index = torch.tensor([op.shape[1] - 1, 0, 2, 0])
        assert rel_err(op.columns(index), K[:, index]) <= TOL


def test_auto_gives_an_uncached_entk_vector_products_and_keeps_factor_columns():
    """``auto`` picks vector products for an eNTK whose factors do not fit the cache (each structured product
    would prepare them again), the structured engine otherwise; columns still come from the factors, the pNTK
    beside it is structured again, and every product equals the dense kernel's."""
    model, make = make_case("mlp_O10")
    model = model.double()
    x = make(12, torch.Generator().manual_seed(0)).double()
    tight = pntk.operator(model, x, kind="entk", memory="40KB", batch_size=4)
    roomy = pntk.operator(model, x, kind="entk")
    assert not tight.plan.cache and tight.engine.value == "vp" and tight.automatic
    assert roomy.plan.cache and roomy.engine.value == "structured"
    assert pntk.operator(model, x, kind="pntk", memory="40KB", batch_size=4).engine.value == "structured"
    assert pntk.operator(model, x, kind="entk", engine="vp").automatic is False
    Theta = as_matrix(pntk.entk(model, x))
    V = torch.randn(Theta.shape[0], 3, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    assert rel_err(tight @ V, Theta @ V) < TOL
    index = torch.tensor([5, 0, 17, 5])
    assert rel_err(tight.columns(index), Theta[:, index]) < TOL
    assert rel_err(tight.diagonal(), Theta.diagonal()) < TOL
    # engine="vp" asked for: per-sample gradients, a few samples at a time within the budget
    asked = pntk.operator(model, x, kind="entk", engine="vp", memory="40KB", batch_size=4)
    assert rel_err(asked.diagonal(), Theta.diagonal()) < TOL
    K = tight.with_kind("pntk")
    assert K.engine.value == "structured" and rel_err(K @ V[:12], pntk.pntk(model, x) @ V[:12]) < TOL


class _Cube(torch.autograd.Function):
    """``x³`` with a backward and a vmap rule but no forward-mode derivative, like a fused kernel without one."""

    generate_vmap_rule = True

    @staticmethod
    def forward(x):
        return x**3

    @staticmethod
    def setup_context(ctx, inputs, output):
        ctx.save_for_backward(inputs[0])

    @staticmethod
    def backward(ctx, g):
        (x,) = ctx.saved_tensors
        return 3 * x**2 * g


def test_auto_keeps_the_structured_engine_for_a_model_without_forward_mode():
    """Without forward-mode AD vector products would fail, so an uncached eNTK stays structured."""

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b = nn.Linear(4, 8), nn.Linear(8, 3)

        def forward(self, x):
            return self.b(_Cube.apply(self.a(x)))

    torch.manual_seed(0)
    model = Net().double().eval()
    x = torch.randn(6, 4, dtype=torch.float64)
    with pytest.raises((RuntimeError, NotImplementedError)):
        torch.func.jvp(model, (x[:1],), (torch.ones_like(x[:1]),))
    op = pntk.operator(model, x, kind="entk", memory="4KB", batch_size=2)
    assert not op.plan.cache and op.engine.value == "structured"
    Theta = as_matrix(pntk.entk(model, x, engine="jacobian"))
    V = torch.randn(Theta.shape[0], 2, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    assert rel_err(op @ V, Theta @ V) < TOL
