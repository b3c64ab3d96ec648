"""Rules inside ``nn.MultiheadAttention`` and recurrent layers (replayed as their linear operations), against
the float64 brute force, in both the factored and the materialised form."""

from __future__ import annotations

import warnings

import pytest
import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

import pntk
from pntk.kernels import Inputs, Kind, functional_model
from pntk.kernels.fallback import FallbackWarning
from pntk.kernels.structured import plan as structured_plan
from pntk.kernels.structured.operations import OperationCalls
from reference import reference_kernel, rel_err

KINDS = ["entk", "trace", "pntk"]


def ruled(model, x) -> set[str]:
    X = Inputs.from_user(x)
    fm = functional_model(model, X[:2])
    layers, _ = structured_plan.plan(fm, X, Kind.PNTK)
    return {n for layer in layers for n in layer.names}


def assert_exact(model, x1, x2, engine="structured"):
    for kind in KINDS:
        for b in (None, x2):
            got = pntk.kernel(model, x1, b, kind=kind, engine=engine, dtype=torch.float64, batch_size=2)
            assert rel_err(got, reference_kernel(model, x1, b, kind)) <= 1e-10, (kind, b is None)


# --- recurrent layers ----------------------------------------------------------------------------------------


class Recurrent(nn.Module):
    """A recurrent layer read at its last step (both directions' final states), a linear head."""

    def __init__(self, cell, d=3, hidden=4, out=2, **options):
        super().__init__()
        self.rnn = cell(d, hidden, **options)
        self.batch_first = options.get("batch_first", False)
        directions = 2 if options.get("bidirectional") else 1
        width = options.get("proj_size") or hidden
        self.head = nn.Linear(directions * width + width, out)

    def forward(self, x):
        y, state = self.rnn(x if self.batch_first else x.transpose(0, 1))
        h = state[0] if isinstance(state, tuple) else state
        last = y[:, -1] if self.batch_first else y[-1]
        return self.head(torch.cat([last, h[-1]], -1))


RECURRENT = {
    "rnn-tanh": (nn.RNN, {"batch_first": True}),
    "rnn-relu-no-bias": (nn.RNN, {"nonlinearity": "relu", "bias": False}),
    "lstm-2-layers-bidirectional": (nn.LSTM, {"num_layers": 2, "bidirectional": True}),
    "lstm-projections": (nn.LSTM, {"proj_size": 3, "batch_first": True}),
    "gru-bidirectional": (nn.GRU, {"bidirectional": True, "batch_first": True}),
    "gru-2-layers": (nn.GRU, {"num_layers": 2}),
}


def steps(n, seed=0, T=4, d=3):
    return torch.randn(n, T, d, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("name", RECURRENT)
def test_replay_equals_recurrent_kernel(name):
    """The step-by-step replay gives the outputs and final states of PyTorch's kernel."""
    cell, options = RECURRENT[name]
    torch.manual_seed(0)
    rnn = cell(3, 4, **options).double().eval()
    x = steps(3).double()
    if not options.get("batch_first"):
        x = x.transpose(0, 1)
    expected = rnn(x)
    names = {id(p): n for n, p in rnn.named_parameters()}
    with OperationCalls(names) as calls:
        got = rnn(x)
    T = x.shape[1 if options.get("batch_first") else 0]
    per_direction = T + 1  # the input projection over all steps, then one hidden projection per step
    layers = options.get("num_layers", 1) * (2 if options.get("bidirectional") else 1)
    projections = T * layers if options.get("proj_size") else 0
    assert len(calls.calls) == layers * per_direction + projections
    for e, g in zip(torch.utils._pytree.tree_leaves(expected), torch.utils._pytree.tree_leaves(got)):
        torch.testing.assert_close(g, e, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("name", RECURRENT)
def test_recurrent_weights_ruled_and_exact(name, form):
    cell, options = RECURRENT[name]
    torch.manual_seed(0)
    model = Recurrent(cell, **options).eval()
    x1, x2 = steps(5, 1), steps(3, 2)
    assert ruled(model, x1) == {n for n, _ in model.named_parameters()}
    assert_exact(model, x1, x2)


class Packed(nn.Module):
    """An LSTM over packed sequences of different lengths (the packed kernel is not replayed)."""

    def __init__(self):
        super().__init__()
        self.rnn = nn.LSTM(3, 4, batch_first=True)
        self.head = nn.Linear(4, 2)

    def forward(self, x, lengths):
        packed = pack_padded_sequence(x, lengths.cpu(), batch_first=True, enforce_sorted=False)
        y, _ = pad_packed_sequence(self.rnn(packed)[0], batch_first=True, total_length=x.shape[1])
        return self.head(y.sum(1))


def test_packed_sequences_fall_back_exactly():
    torch.manual_seed(0)
    model = Packed().eval()
    x = (steps(4), torch.tensor([4, 2, 3, 1]))
    assert ruled(model, x) == {"head.weight", "head.bias"}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FallbackWarning)
        for kind in KINDS:
            got = pntk.kernel(model, x, kind=kind, engine="structured", dtype=torch.float64)
            assert rel_err(got, reference_kernel(model, x, None, kind)) <= 1e-10, kind


# --- nn.MultiheadAttention --------------------------------------------------------------------------------


class SelfAttention(nn.Module):
    """Self-attention with the options that change ``F.multi_head_attention_forward``'s path."""

    def __init__(self, d=4, out=2, batch_first=True, need_weights=False, causal=False, kv_bias=False):
        super().__init__()
        self.attn = nn.MultiheadAttention(d, 2, batch_first=batch_first, add_bias_kv=kv_bias)
        self.head = nn.Linear(d, out)
        self.batch_first, self.need_weights, self.causal = batch_first, need_weights, causal

    def forward(self, x, mask=None):
        h = x if self.batch_first else x.transpose(0, 1)
        T = x.shape[1]
        causal = torch.triu(torch.ones(T, T, dtype=torch.bool), 1) if self.causal else None
        padding = None if mask is None else mask == 0
        y, _ = self.attn(h, h, h, need_weights=self.need_weights, attn_mask=causal, key_padding_mask=padding)
        y = y if self.batch_first else y.transpose(0, 1)
        return self.head(torch.tanh(x + y).mean(1))


class CrossAttention(nn.Module):
    """Queries from one input, keys and values from another: the packed in-projection is split into views."""

    def __init__(self, d=4):
        super().__init__()
        self.attn = nn.MultiheadAttention(d, 2, batch_first=True)
        self.head = nn.Linear(d, 2)

    def forward(self, x):
        y, _ = self.attn(x, 2 * x, 2 * x, need_weights=False)
        return self.head(y.mean(1))


ATTENTION = {
    "batch-first": ({}, False),
    "sequence-first": ({"batch_first": False}, False),
    "need-weights": ({"need_weights": True}, False),
    "causal": ({"causal": True}, False),
    "padding-mask": ({}, True),
}


@pytest.mark.parametrize("name", ATTENTION)
def test_attention_projections_ruled_and_exact(name, form):
    options, masked = ATTENTION[name]
    torch.manual_seed(0)
    model = SelfAttention(**options).eval()

    def inputs(n, seed):
        x = steps(n, seed, d=4)
        if not masked:
            return x
        mask = torch.ones(n, 4, dtype=torch.long)
        mask[1::2, 2:] = 0
        return x, mask

    x1, x2 = inputs(5, 1), inputs(3, 2)
    assert ruled(model, x1) == {n for n, _ in model.named_parameters()}
    assert_exact(model, x1, x2)


def test_attention_kv_bias_and_cross_attention():
    """Parameters that no rule reads (``bias_k``/``bias_v``, an in-projection used through its slices) fall
    back; the rest stay ruled and the kernel exact."""
    torch.manual_seed(0)
    model = SelfAttention(kv_bias=True).eval()
    x1, x2 = steps(4, 1, d=4), steps(3, 2, d=4)
    assert ruled(model, x1) == {n for n, _ in model.named_parameters()} - {"attn.bias_k", "attn.bias_v"}
    assert_exact(model, x1, x2)
    cross = CrossAttention().eval()
    assert "attn.in_proj_weight" not in ruled(cross, x1)
    assert {"attn.out_proj.weight", "head.weight"} <= ruled(cross, x1)
    assert_exact(cross, x1, x2)


@pytest.mark.parametrize("name", ["mha", "encoder", "encoder-mask", "rnn", "lstm", "gru"])
def test_explain_shows_every_parameter_ruled(name):
    """Before the replays, the attention projections and recurrent weights fell back (9% of P for the
    attention case, 4% for the LSTM)."""
    from architectures import BY_NAME

    case = BY_NAME[name]
    e = pntk.explain(case.build(), case.inputs(6, 0), kind="entk")
    assert e.ruled_fraction == 1.0 and e.engine.value == "structured"
    assert not [p.name for p in e.parameters if p.path == "fallback"]


@pytest.mark.parametrize("name, kind", [("gru", "entk"), ("lstm", "pntk")])
def test_sketch_of_recurrent_weights_is_unbiased(name, kind):
    """``W_ih`` and ``W_hh`` are two layers of one module: their random projections must differ, else the mean
    of ``Φ Φᵀ`` over seeds keeps their cross term (it stayed 10–14% off the kernel when they shared one)."""
    from architectures import BY_NAME

    case = BY_NAME[name]
    model, x = case.build(), case.inputs(6, 0)
    K = pntk.kernel(model, x, kind=kind, dtype=torch.float64)
    K = K if K.dim() == 2 else K.permute(0, 2, 1, 3).reshape(K.shape[0] * K.shape[2], -1)
    seeds = 24
    mean = (
        sum(
            (lambda Phi: Phi @ Phi.T)(
                pntk.features(model, x, k=2048, kind=kind, seed=s, dtype=torch.float64).flatten(0, -2)
            )
            for s in range(seeds)
        )
        / seeds
    )
    # One seed's error is about 0.12 here; the mean of 24 independent unbiased sketches is about 5× closer.
    assert rel_err(mean, K) < 0.06
