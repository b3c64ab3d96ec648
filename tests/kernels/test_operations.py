"""Rules by operation (``F.linear``, ``addmm``, ``matmul`` with a weight parameter, whatever module owns it)
and ``pntk.explain``, against the float64 brute force."""

from __future__ import annotations

import warnings

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import pntk
from architectures import BY_NAME, CASES
from pntk.kernels import Inputs, Kind, functional_model
from pntk.kernels.structured import plan as structured_plan
from pntk.kernels.structured.operations import OpSite
from reference import reference_kernel, rel_err

KINDS = ["entk", "trace", "pntk"]


def by_operation(model, x) -> set[str]:
    X = Inputs.from_user(x)
    fm = functional_model(model, X[:2])
    layers, _ = structured_plan.plan(fm, X, Kind.PNTK)
    return {n for layer in layers if isinstance(layer.module, OpSite) for n in layer.names}


class LoRA(nn.Module):
    """A frozen dense layer with a low-rank adapter written with raw parameters: ``W x + B A x``."""

    def __init__(self, n=6, m=5, r=2):
        super().__init__()
        self.base = nn.Linear(n, m)
        self.lora_A = nn.Parameter(torch.randn(r, n) / n)
        self.lora_B = nn.Parameter(torch.randn(m, r) / r)
        self.head = nn.Linear(m, 3)

    def forward(self, x):
        h = self.base(x) + (x @ self.lora_A.T) @ self.lora_B.t()
        return self.head(torch.tanh(h).mean(1))


class SequenceFirst(nn.Module):
    """``F.linear`` on ``[T, B, n]``, then ``torch.mm`` on the sample-minor ``[T·B, n]``, as
    ``nn.MultiheadAttention`` lays them out."""

    def __init__(self, n=6, m=4):
        super().__init__()
        self.w1 = nn.Parameter(torch.randn(m, n) / n)
        self.b1 = nn.Parameter(torch.randn(m))
        self.w2 = nn.Parameter(torch.randn(m, 3) / m)

    def forward(self, x):
        h = torch.tanh(F.linear(x.transpose(0, 1), self.w1, self.b1))  # [T, B, m]
        T, B = h.shape[:2]
        z = torch.mm(h.reshape(T * B, -1), self.w2)  # [T·B, 3], rows t·B + b
        return z.reshape(T, B, -1).mean(0)


class UsedTwice(nn.Module):
    """One weight in two operations: a layer called twice, its calls concatenated as positions."""

    def __init__(self, n=6):
        super().__init__()
        self.w = nn.Parameter(torch.randn(n, n) / n)
        self.head = nn.Linear(n, 2)

    def forward(self, x):
        return self.head(torch.tanh(torch.tanh(x @ self.w) @ self.w).mean(1))


class UsedElsewhere(UsedTwice):
    """The weight also enters outside a linear operation: no rule can read its gradient off one operation."""

    def forward(self, x):
        return self.head(torch.tanh(x @ self.w + self.w.diagonal()).mean(1))


def tokens(n, seed=0):
    return torch.randn(n, 4, 6, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize(
    "model, ruled",
    [
        (LoRA, {"lora_A", "lora_B"}),
        (SequenceFirst, {"w1", "b1", "w2"}),
        (UsedTwice, {"w"}),
        (UsedElsewhere, set()),
    ],
    ids=["lora", "sequence-first", "used-twice", "used-elsewhere"],
)
def test_rules_by_operation(model, ruled, form):
    torch.manual_seed(0)
    net = model().eval()
    x1, x2 = tokens(5, 1), tokens(3, 2)
    assert by_operation(net, x1) == ruled
    for kind in KINDS:
        for b in (None, x2):
            got = pntk.kernel(net, x1, b, kind=kind, engine="structured", dtype=torch.float64, batch_size=2)
            assert rel_err(got, reference_kernel(net, x1, b, kind)) <= 1e-10, (kind, b is None)


def test_indistinguishable_rows_are_not_ruled():
    """All rows of a sample equal: a merged sample axis could be sample-major or -minor, so no rule."""
    net = SequenceFirst().eval()
    x = tokens(1).expand(4, -1, -1).clone()[:, :1].expand(-1, 4, -1).clone()
    assert "w2" not in by_operation(net, x)
    got = pntk.pntk(net, x, engine="structured", dtype=torch.float64)
    assert rel_err(got, reference_kernel(net, x, None, "pntk")) <= 1e-10


def test_gpt2_conv1d_by_operation():
    pytest.importorskip("transformers")
    case = BY_NAME["gpt2"]
    model, x = case.build(), case.inputs(4, 0)
    e = pntk.explain(model, x, kind="entk", output="logits", engine="structured")
    assert e.engine.value == "structured" and e.ruled_fraction >= 0.9
    paths = {p.name: p for p in e.parameters}
    assert paths["transformer.h.0.attn.c_attn.weight"].rule == "addmm on transformer.h.0.attn.c_attn.weight"
    assert paths["transformer.h.0.attn.c_attn.bias"].path != "fallback"


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_explain_every_model(case):
    pytest.importorskip("transformers")
    model, x = case.build(), case.inputs(6, 0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        e = pntk.explain(model, x, kind="trace", output=case.output)
    names = [n for n, p in model.named_parameters() if p.requires_grad]
    assert [p.name for p in e.parameters] == names
    assert e.P == sum(p.numel for p in e.parameters) == sum(p.numel() for p in model.parameters())
    ruled = sum(p.numel for p in e.parameters if p.path != "fallback") / e.P
    assert e.ruled_fraction == pytest.approx(ruled)
    assert e.N == 6 and e.batch_size >= 1 and e.block_bytes > 0 and e.tile_bytes >= e.block_bytes
    text = str(e)
    assert f"engine: {e.engine.value}" in text and all(n in text for n in names)
    # auto's choice is the engine the kernel functions use
    assert e.engine.value == pntk.plan(model, x, kind=Kind.TRACE, output=case.output).engine


@pytest.mark.parametrize("name", ["bert", "bert-sdpa", "gpt2", "gpt2-sdpa", "t5"])
def test_hugging_face_models_fully_under_rules(name):
    """Position embeddings, T5's relative attention bias, its tied ``shared.weight`` and ``T5LayerNorm``: every
    parameter of these models is under a rule, so none needs per-sample gradients."""
    pytest.importorskip("transformers")
    case = BY_NAME[name]
    model, x = case.build(), case.inputs(6, 0)
    e = pntk.explain(model, x, kind="pntk", output=case.output, engine="structured")
    assert [p.name for p in e.parameters if p.path == "fallback"] == []
    assert e.ruled_fraction == 1.0 and e.fallback is None
