"""A wide dense layer whose output the model's output reads in a few rows (an untied language-model head and
its label words): the structured engine keeps those rows of its weight and bias only, against the float64
brute force, for every kind, in both forms, and in products and sketches."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import pntk
from pntk.kernels import Inputs, functional_model
from pntk.kernels.kinds import Kind
from pntk.kernels.structured.plan import SPARSE_FROM, plan
from reference import reference_kernel, rel_err

KINDS = ["entk", "trace", "pntk"]
V = SPARSE_FROM + 6


class Head(nn.Module):
    """Token embeddings, a mixing layer, and an untied head over a vocabulary of ``V``; the output is the logits
    of ``rows`` at the last position (``rows=None``: a mean over every logit, which reads all rows)."""

    def __init__(self, rows: list[int] | None, bias: bool = True):
        super().__init__()
        torch.manual_seed(0)
        self.embed = nn.Embedding(V, 4)
        self.mix = nn.Linear(4, 4)
        self.head = nn.Linear(4, V, bias=bias)
        self.rows = rows

    def forward(self, ids):
        logits = self.head(torch.tanh(self.mix(self.embed(ids))))[:, -1]
        return logits.mean(1, keepdim=True) if self.rows is None else logits[:, self.rows]


def ids(n: int, seed: int) -> torch.Tensor:
    return torch.randint(0, V, (n, 3), generator=torch.Generator().manual_seed(seed))


def head_layer(model: nn.Module, x: torch.Tensor, kind: Kind = Kind.PNTK):
    fm = functional_model(model, Inputs.from_user(x))
    layers, fallback = plan(fm, fm.sample, kind)
    assert fallback == []
    return next(layer for layer in layers if layer.module is model.head)


def test_the_rows_read_are_kept():
    model = Head(rows=[V - 1, 7, 2])
    layer = head_layer(model, ids(4, 0))
    assert layer.support == (2, 7, V - 1) and layer.shape.m == 3
    assert head_layer(Head(rows=None), ids(4, 0)).support == ()  # every row read: nothing to restrict
    assert "Linear, the 3 rows of its output that the output reads" in str(pntk.explain(model, ids(4, 0), kind="pntk"))


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("bias", [True, False])
def test_restricted_heads_equal_the_brute_force(kind, bias, form):
    model = Head(rows=[5, 900, 1], bias=bias).double()
    x1, x2 = ids(5, 1), ids(3, 2)
    assert head_layer(model, x1, Kind(kind)).factored == (form == "factored")
    for a, b in ((x1, None), (x1, x2)):
        got = pntk.kernel(model, a, b, kind=kind, engine="structured", batch_size=2)
        assert rel_err(got, reference_kernel(model, a, b, kind)) <= 1e-10
    parts = pntk.kernel(model, x1, kind=kind, engine="structured", by_layer=True)
    assert (
        rel_err(parts["head"], reference_kernel(model, x1, None, kind, names=["head.weight", "head.bias"][: 1 + bias]))
        <= 1e-10
    )


@pytest.mark.parametrize("kind", ["pntk", "entk"])
def test_operator_products(kind):
    model = Head(rows=[5, 900]).double()
    x1, x2 = ids(5, 3), ids(4, 4)
    op = pntk.operator(model, x1, x2, kind=kind, batch_size=2)
    ref = reference_kernel(model, x1, x2, kind)
    W = torch.randn(4, 2, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    if kind == "pntk":
        assert rel_err(op @ W[:, 0], ref @ W[:, 0]) <= 1e-10
    else:
        assert rel_err(op @ W, torch.einsum("ijab,jbk->iak", ref, W)) <= 1e-10


class Rows(nn.Module):
    def __init__(self, rows: list[int]):
        super().__init__()
        self.rows = rows

    def forward(self, z):
        return z[:, self.rows]


@pytest.mark.parametrize("kind", KINDS)
def test_an_orthogonal_kronecker_block_of_the_kept_rows_gives_the_kernel_exactly(kind):
    """The sketch projects the restricted gradient: one orthogonal block over the kept rows (and the bias
    column) of the only layer recovers the kernel."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(5, V), Rows([4, 1000, 9])).double().eval()
    x = torch.randn(7, 5, dtype=torch.float64)
    m = 3 * (3 if kind == "trace" else 1)  # the trace's output side stacks the O rows
    Phi = pntk.features(model, x, k=m * 6, kind=kind, block=(m, 6), distribution="orthogonal", seed=5)
    K = torch.einsum("nak,mbk->nmab", Phi, Phi) if kind == "entk" else Phi @ Phi.T
    assert torch.allclose(K, reference_kernel(model, x, kind=kind), rtol=1e-12, atol=1e-13)


class OwnRow(Head):
    """Each sample's logit of its own first token: the rows read depend on the sample."""

    def forward(self, ids):
        logits = self.head(torch.tanh(self.mix(self.embed(ids))))[:, -1]
        return logits.gather(1, ids[:, :1])


def own_rows(first_tokens: list[int]) -> tuple[nn.Module, torch.Tensor]:
    """:class:`OwnRow` and inputs whose first tokens, the rows read, are ``first_tokens``."""
    x = ids(len(first_tokens), 6)
    x[:, 0] = torch.tensor(first_tokens)
    return OwnRow(rows=None).double(), x


def test_rows_that_differ_between_probed_samples_keep_the_whole_layer():
    model, x = own_rows([3, 8, 9, 9])
    assert head_layer(model, x).support == ()
    got = pntk.pntk(model, x, engine="structured")
    assert rel_err(got, reference_kernel(model, x, None, "pntk")) <= 1e-10


def test_rows_that_differ_for_later_samples_are_refused_with_what_to_use():
    model, x = own_rows([3, 3, 8, 9])
    with pytest.raises(RuntimeError, match="outside the 1 it depended on.*engine='jacobian'"):
        pntk.pntk(model, x, engine="structured")
    assert rel_err(pntk.pntk(model, x, engine="jacobian"), reference_kernel(model, x, None, "pntk")) <= 1e-10


class Gated(nn.Module):
    """A wide hidden layer whose units past the tenth switch on only for a large first input: the two probed
    samples see the same ten active units, a later one more. Its rows are read through activations, not by a
    selection of outputs, and it is not the last layer: it keeps all of them."""

    def __init__(self):
        super().__init__()
        self.hidden, self.out = nn.Linear(2, V), nn.Linear(V, 3)
        with torch.no_grad():
            self.hidden.weight.zero_()
            self.hidden.weight[10:, 0] = 1.0
            self.hidden.bias.fill_(-5.0)
            self.hidden.bias[:10] = 1.0
            self.hidden.weight[:10, 1] = 0.5

    def forward(self, x):
        return self.out(torch.relu(self.hidden(x)))


def test_a_hidden_layer_whose_rows_are_switched_by_activations_keeps_them_all():
    model = Gated().double().eval()
    x = torch.tensor([[0.0, 1.0], [0.5, -1.0], [9.0, 0.3], [0.1, 0.2]], dtype=torch.float64)
    fm = functional_model(model, Inputs.from_user(x))
    layers, _ = plan(fm, fm.sample, Kind.PNTK)
    assert all(layer.support == () for layer in layers)
    got = pntk.pntk(model, x, engine="structured", batch_size=2)
    assert rel_err(got, reference_kernel(model, x, None, "pntk")) <= 1e-10


def test_auto_switches_to_the_jacobian_engine_when_the_rows_change():
    model, x = own_rows([3, 3, 8, 9])
    with pytest.warns(UserWarning, match="computing the kernel with the Jacobian engine instead"):
        got = pntk.pntk(model, x, batch_size=2)
    assert rel_err(got, reference_kernel(model, x, None, "pntk")) <= 1e-10


def test_every_entry_point_switches_or_says_what_to_use_when_the_rows_change(tmp_path):
    """The operator with ``auto`` leaves the structured engine for vector products (products, columns and the
    diagonal exact); each path that cannot switch names its exact alternative."""
    model, x = own_rows([3, 3, 8, 9])
    ref = reference_kernel(model, x, None, "pntk")
    V = torch.randn(4, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    op = pntk.operator(model, x, batch_size=2)
    with pytest.warns(UserWarning, match="computing the operator's products with vector products instead"):
        got = op @ V
    assert op.engine is pntk.Engine.VP
    assert rel_err(got, ref @ V) <= 1e-10
    assert rel_err(op.columns(torch.tensor([2, 0])), ref[:, [2, 0]]) <= 1e-10
    with pytest.warns(UserWarning, match="vector products instead"):
        diagonal = pntk.operator(model, x, batch_size=2).diagonal()
    assert rel_err(diagonal, ref.diagonal()) <= 1e-10
    with pytest.warns(UserWarning, match="vector products instead"):
        cols = pntk.operator(model, x, batch_size=2).columns(torch.tensor([1]))
    assert rel_err(cols, ref[:, [1]]) <= 1e-10
    with pytest.raises(pntk.errors.StructureChangedError, match="use engine='vp'"):
        pntk.operator(model, x, engine="structured", batch_size=2) @ V
    with pytest.raises(pntk.errors.StructureChangedError, match="use method='dense'"):
        pntk.features(model, x, k=64, batch_size=2)
    assert pntk.features(model, x, k=64, method="dense", batch_size=2).shape == (4, 64)
    with pytest.raises(pntk.errors.StructureChangedError, match="engine='jacobian'"):
        pntk.compute(model, x, kind="pntk", out=tmp_path / "k.zarr", batch_size=2)
    store = pntk.compute(
        model, x, kind="pntk", out=tmp_path / "k.zarr", batch_size=2, engine="jacobian", overwrite=True
    )
    assert rel_err(torch.from_numpy(store.numpy()), ref) <= 1e-10


def test_an_operator_under_torch_distributed_refuses_rather_than_switch(monkeypatch):
    """A rank that meets the change cannot switch alone (the others' collectives would no longer match)."""
    import pntk.operators.kernel as module

    model, x = own_rows([3, 3, 8, 9])
    monkeypatch.setattr(module, "_rank", lambda: (1, 2))  # the rank whose chunk holds the later rows
    with pytest.raises(pntk.errors.StructureChangedError, match="cannot switch engines within a product"):
        pntk.operator(model, x, batch_size=2) @ torch.ones(4, dtype=torch.float64)
