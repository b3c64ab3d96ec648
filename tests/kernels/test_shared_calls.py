"""Rules for parameters that enter a network in ways a per-layer hook alone cannot read, against the float64
brute force: embeddings of ids shared by all samples (positions, relative-position buckets), one parameter
held by several modules (tied embeddings), and elementwise scales ``w * x`` by a parameter."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

import pntk
from pntk.kernels import Inputs, Kind, functional_model
from pntk.kernels.structured import plan as structured_plan
from reference import reference_kernel, rel_err
from shared_models import VOCAB, Positions, RelativeBias, Scales, T, Tied, TiedHead, TwoTiedHeads, images, tokens

KINDS = ["entk", "trace", "pntk"]


def plan(model, x) -> tuple[list[structured_plan.Layer], list[str]]:
    X = Inputs.from_user(x)
    return structured_plan.plan(functional_model(model, X[:2]), X, Kind.PNTK)


def fallback(model, x) -> set[str]:
    return set(plan(model, x)[1])


def assert_exact(model, x1, x2, engine="structured"):
    for kind in KINDS:
        for b in (None, x2):
            got = pntk.kernel(model, x1, b, kind=kind, engine=engine, dtype=torch.float64, batch_size=2)
            assert rel_err(got, reference_kernel(model, x1, b, kind)) <= 1e-10, (kind, b is None)


class UnbatchedPositions(Positions):
    """Positions ``arange(T)`` without a leading axis: the output ``[T, d]`` has none to expand, so the
    embedding falls back."""

    def embed(self, ids):
        return self.tokens(ids) + self.positions(torch.arange(ids.shape[1]))


class FirstRowMisuse(Positions):
    """The position embeddings' first row is also used on its own: its expansion would give that path's
    cotangents of every sample to the first."""

    def embed(self, ids):
        pe = self.positions(self.position_ids)
        return self.tokens(ids) + pe * pe[0].mean()


class SummedMisuse(Positions):
    """The position embeddings summed over their leading axis: expanding it would change the output."""

    def embed(self, ids):
        pe = self.positions(self.position_ids)
        return self.tokens(ids) + pe.sum(0)


class TwoUses(Positions):
    """The position embeddings also enter without the leading axis: that use would miss its cotangents."""

    def embed(self, ids):
        pe = self.positions(self.position_ids)
        return self.tokens(ids) + pe + torch.sin(pe[0])


@pytest.mark.parametrize(
    "model, shared",
    [
        (lambda: Positions([0, 1, 2, 3, 4]), "positions"),
        (lambda: Positions([0, 1, 1, 2, 0]), "positions"),  # repeated positions
        (RelativeBias, "bias"),
    ],
    ids=["positions", "repeated-positions", "relative-bias"],
)
def test_shared_ids_are_ruled_and_exact(model, shared, form):
    torch.manual_seed(0)
    net = model().eval()
    x1, x2 = tokens(5, 1), tokens(3, 2)
    layers, rest = plan(net, x1)
    assert rest == []
    (layer,) = [layer for layer in layers if layer.weight == f"{shared}.weight"]
    assert layer.shared == (True,) and layer.factored == (form == "factored")
    assert_exact(net, x1, x2)


@pytest.mark.parametrize("model", [UnbatchedPositions, FirstRowMisuse, SummedMisuse, TwoUses])
def test_shared_ids_that_cannot_be_expanded_fall_back(model):
    """Where the expansion is not used as the model used the shared output, the check refuses it."""
    torch.manual_seed(0)
    net = model([0, 1, 2, 3, 4]).eval()
    x1, x2 = tokens(5, 1), tokens(3, 2)
    assert fallback(net, x1) == {"positions.weight"}
    assert_exact(net, x1, x2)


def test_shared_ids_on_every_engine():
    torch.manual_seed(0)
    net = RelativeBias().eval()
    x = tokens(4, 3)
    for engine in ("auto", "jacobian", "vp"):
        got = pntk.trace_ntk(net, x, engine=engine, dtype=torch.float64, batch_size=3)
        assert rel_err(got, reference_kernel(net, x, None, "trace")) <= 1e-10, engine


class TiedHeadAlsoRead(TiedHead):
    """The tied weight also read outside the two layers: no rule sees that use."""

    def forward(self, ids, mask):
        return super().forward(ids, mask) * self.embed.weight.mean()


def test_tied_modules_are_one_layer(form):
    torch.manual_seed(0)
    net = Tied().eval()
    x1, x2 = tokens(5, 1), tokens(3, 2)
    layers, rest = plan(net, x1)
    assert rest == []
    (layer,) = [layer for layer in layers if layer.weight == "shared.weight"]
    assert layer.shape.T == 2 * T and set(layer.modules) == {net.encoder, net.decoder, net.shared}
    assert_exact(net, x1, x2)


@pytest.mark.parametrize("rows", [None, [5, 0, 3]])
def test_an_embedding_tied_to_a_linear_head_is_one_layer(rows, form):
    """Each row of the head that the output reads (all of them without ``rows``) is one more lookup."""
    torch.manual_seed(0)
    net = TiedHead(rows=rows).eval()
    x1, x2 = tokens(4, 1), tokens(3, 2)
    layers, rest = plan(net, x1)
    assert rest == []
    (layer,) = [layer for layer in layers if layer.heads]
    support = tuple(range(VOCAB)) if rows is None else (0, 3, 5)
    assert layer.weight == "embed.weight" and layer.heads == (net.out,) and layer.support == support
    assert layer.shape.T == T + len(support)
    assert_exact(net, x1, x2)


def test_two_heads_tied_to_one_embedding(form):
    """The rows either head reads; the second head's bias is ruled with it."""
    torch.manual_seed(0)
    net = TwoTiedHeads().eval()
    x1, x2 = tokens(4, 1), tokens(3, 2)
    layers, rest = plan(net, x1)
    assert rest == []
    (layer,) = [layer for layer in layers if layer.heads]
    assert layer.heads == (net.out, net.second) and layer.support == (1, 4, 6)
    assert [h.bias for h in layers if h.module is net.second] == ["second.bias"]
    assert_exact(net, x1, x2)


def test_tied_heads_that_share_a_bias_fall_back():
    torch.manual_seed(0)
    net = TwoTiedHeads().eval()
    net.out = nn.Linear(4, VOCAB)
    net.out.weight, net.second.bias = net.embed.weight, net.out.bias
    x1, x2 = tokens(4, 1), tokens(3, 2)
    assert fallback(net, x1) == {"embed.weight", "out.bias"}
    assert_exact(net, x1, x2)


def test_a_tied_weight_read_elsewhere_falls_back():
    torch.manual_seed(0)
    net = TiedHeadAlsoRead().eval()
    x1, x2 = tokens(4, 1), tokens(3, 2)
    assert fallback(net, x1) == {"embed.weight"}
    assert_exact(net, x1, x2)


class NotScales(Scales):
    """A parameter times itself, and one times a number, are no scales of a tensor by a parameter."""

    def forward(self, x):
        h = (x + torch.tanh(self.conv(x)) * self.gamma * 2.0).flatten(1, 2)
        return self.head(torch.tanh(self.weight * self.weight * h + self.s.mul(2.0) * h).mean(1))


def test_scales_are_ruled_and_exact():
    torch.manual_seed(0)
    net = Scales().eval()
    x1, x2 = images(5, 1), images(3, 2)
    layers, rest = plan(net, x1)
    assert rest == []
    scales = {layer.weight: layer for layer in layers if layer.module.__class__.__name__ == "OpSite"}
    assert set(scales) == {"gamma", "weight", "s"}
    assert scales["s"].shape.T == 2 * 3 * 4 and scales["gamma"].shape.T == 16 and not scales["s"].factored
    assert_exact(net, x1, x2)


def test_products_that_are_not_scales_fall_back():
    torch.manual_seed(0)
    net = NotScales().eval()
    x1, x2 = images(4, 1), images(3, 2)
    assert fallback(net, x1) == {"weight", "s"}
    assert_exact(net, x1, x2)


def test_operator_products():
    """The kernel operator's products read the same factors: exact with shared ids and with scales."""
    torch.manual_seed(0)
    net = RelativeBias().eval()
    x = tokens(6, 4)
    K = reference_kernel(net, x, None, "pntk")
    v = torch.randn(6, 1, dtype=torch.float64)
    op = pntk.operator(net, x, kind="pntk", dtype=torch.float64)
    assert rel_err(op @ v, K @ v) <= 1e-10
    net2 = Scales().eval()
    y = images(6, 5)
    K2 = reference_kernel(net2, y, None, "pntk")
    assert rel_err(pntk.operator(net2, y, kind="pntk", dtype=torch.float64) @ v, K2 @ v) <= 1e-10


class Broadcast(nn.Module):
    """``w * x`` (or ``x * w``) for a parameter ``w`` of any shape that broadcasts against the per-sample shape
    ``S`` of ``x``; ``x`` itself may be broadcast along some axes (size 1 there)."""

    def __init__(self, S: tuple[int, ...], w: tuple[int, ...], x: tuple[int, ...], w_first: bool):
        super().__init__()
        self.x_shape, self.w_first = x, w_first
        self.inp = nn.Linear(3, math.prod(x))
        self.w = nn.Parameter(torch.rand(w) + 0.5)
        self.head = nn.Linear(math.prod(S), 2)

    def forward(self, v):
        x = torch.tanh(self.inp(v)).reshape(-1, *self.x_shape)
        z = self.w * x if self.w_first else x * self.w
        return self.head(torch.tanh(z).flatten(1))


@st.composite
def broadcasts(draw):
    S = tuple(draw(st.lists(st.integers(1, 3), min_size=1, max_size=3)))
    w = tuple(draw(st.sampled_from([1, s])) for s in S)[draw(st.integers(0, len(S) - 1)) :]
    padded = (1,) * (len(S) - len(w)) + w
    x = tuple(1 if padded[k] == s and draw(st.booleans()) else s for k, s in enumerate(S))  # w gives the size
    return S, w, x, draw(st.booleans()), draw(st.integers(0, 2**16))


@settings(max_examples=25, deadline=None)
@given(broadcasts())
def test_scales_of_any_broadcast_are_exact(case):
    """Wherever ``w`` and ``x`` broadcast, the scale rule's per-sample gradient ``Σ_t D_t ⊙ x_t`` over the
    broadcast positions is the brute force's."""
    S, w, x_shape, w_first, seed = case
    torch.manual_seed(seed)
    net = Broadcast(S, w, x_shape, w_first).eval()
    v = torch.randn(4, 3, generator=torch.Generator().manual_seed(seed))
    layers, rest = plan(net, v)
    assert "w" not in rest
    for kind in KINDS:
        got = pntk.kernel(net, v, kind=kind, engine="structured", dtype=torch.float64, batch_size=3)
        assert rel_err(got, reference_kernel(net, v, None, kind)) <= 1e-10, (kind, S, w, x_shape)
