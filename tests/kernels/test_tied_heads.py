"""Language models whose head shares its weight with the input embedding (BERT's masked-LM head, GPT-2's
``lm_head``): the structured engine rules the shared weight as lookups plus the head's rows, against the
float64 brute force, in both forms and for every kind."""

from __future__ import annotations

import warnings

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

import pntk
from architectures import VOCAB, gpt2_lm, token_inputs
from pntk.errors import StructureChangedError
from pntk.kernels import Inputs, functional_model
from pntk.kernels.kinds import Kind
from pntk.kernels.outputs import LabelWords
from pntk.kernels.structured.plan import plan
from reference import reference_kernel, rel_err

pytest.importorskip("transformers")

KINDS = ["entk", "trace", "pntk"]


def bert_mlm() -> nn.Module:
    """A tiny masked language model; its word embedding has ``padding_idx = 0`` and its head a bias."""
    from transformers import BertConfig, BertForMaskedLM

    config = BertConfig(
        vocab_size=VOCAB, hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32
    )
    torch.manual_seed(0)
    return BertForMaskedLM._from_config(config, attn_implementation="eager").eval()


# Row 0 is the padding id: the head's row 0 keeps its gradient although the lookups of id 0 have none.
MODELS = {
    "bert-mlm": (bert_mlm, LabelWords(ids=[0, 5, 11], position=2), True),
    "gpt2-lm": (gpt2_lm, LabelWords(ids=[5, 11], position=-1), False),
}


@pytest.fixture(autouse=True)
def _quiet():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


def word_embedding(model: nn.Module) -> str:
    return next(n for n, p in model.named_parameters() if p is model.get_input_embeddings().weight)


@pytest.mark.parametrize("name", MODELS)
def test_the_tied_weight_is_ruled(name):
    build, select, _ = MODELS[name]
    model = build()
    x = token_inputs(2, 0, pad=False)
    fm = functional_model(model, Inputs.from_user(x), output=select)
    layers, fallback = plan(fm, fm.sample, Kind.ENTK)
    assert fallback == []
    (tied,) = [layer for layer in layers if layer.heads]
    assert tied.weight == word_embedding(model)
    assert tied.heads == (model.get_output_embeddings(),)
    assert tied.support == tuple(sorted(select.ids))
    explained = pntk.explain(model, x, kind="entk", output=select)
    assert explained.ruled_fraction == 1.0
    assert "tied to 1 Linear head" in str(explained)


@pytest.mark.parametrize("name", MODELS)
@pytest.mark.parametrize("kind", KINDS)
def test_tied_heads_equal_the_brute_force(name, kind, form):
    build, select, pad = MODELS[name]
    model = build()
    x1, x2 = token_inputs(5, 1, pad=pad), token_inputs(3, 2, pad=pad)
    for a, b in ((x1, None), (x1, x2)):
        got = pntk.kernel(model, a, b, kind=kind, engine="structured", dtype=torch.float64, output=select, batch_size=2)
        assert rel_err(got, reference_kernel(model, a, b, kind, output=select)) <= 1e-10


def test_an_output_over_every_logit():
    """Every vocabulary row is in the support: the head's whole gradient, as rows of the lookup layer."""
    model = gpt2_lm()
    x = token_inputs(4, 3, pad=False)

    def select(out):
        return out.logits[:, -1].logsumexp(-1, keepdim=True)

    fm = functional_model(model, Inputs.from_user(x), output=select)
    (tied,) = [layer for layer in plan(fm, fm.sample, Kind.PNTK)[0] if layer.heads]
    assert tied.support == tuple(range(VOCAB))
    got = pntk.pntk(model, x, engine="structured", dtype=torch.float64, output=select)
    assert rel_err(got, reference_kernel(model, x, None, "pntk", output=select)) <= 1e-10


class OwnWord(nn.Module):
    """Each sample's logit of its own first token at the last position: the rows of the head that the output
    reads depend on the sample."""

    def __init__(self):
        super().__init__()
        self.lm = gpt2_lm()

    def forward(self, input_ids):
        logits = self.lm(input_ids=input_ids).logits[:, -1]
        return logits.gather(1, input_ids[:, :1])


def test_rows_that_differ_between_the_probed_samples_fall_back():
    """The plan finds the rows on the first two samples: they differ, so the tied weight takes per-sample
    gradients, and every engine is exact."""
    model = OwnWord()
    ids = token_inputs(4, 4, pad=False)["input_ids"]
    ids[:, 0] = torch.tensor([3, 8, 9, 9])
    explained = pntk.explain(model, ids, kind="pntk")
    assert "fallback" in str(explained) and explained.ruled_fraction < 1
    for engine in ("auto", "structured"):
        got = pntk.pntk(model, ids, engine=engine, dtype=torch.float64)
        assert rel_err(got, reference_kernel(model, ids, None, "pntk")) <= 1e-10


def test_rows_that_depend_on_other_samples_are_refused_with_what_to_use():
    """The first two samples read the same row, the others other rows: found when their block is captured."""
    model = OwnWord()
    ids = token_inputs(4, 4, pad=False)["input_ids"]
    ids[:, 0] = torch.tensor([3, 3, 8, 9])
    with pytest.raises(RuntimeError, match="outside the 1 it depended on.*engine='jacobian'"):
        pntk.pntk(model, ids, engine="structured", dtype=torch.float64)
    got = pntk.pntk(model, ids, engine="jacobian", dtype=torch.float64)
    assert rel_err(got, reference_kernel(model, ids, None, "pntk")) <= 1e-10


@pytest.mark.parametrize("kind", ["pntk", "entk"])
def test_operator_products_with_a_tied_head(kind):
    """``op @ V`` contracts the tied layer's factors like any other: equal to the brute-force kernel times V."""
    model, select = gpt2_lm(), MODELS["gpt2-lm"][1]
    x1, x2 = token_inputs(5, 6, pad=False), token_inputs(3, 7, pad=False)
    op = pntk.operator(model, x1, x2, kind=kind, output=select, dtype=torch.float64, batch_size=2)
    ref = reference_kernel(model, x1, x2, kind, output=select)
    g = torch.Generator().manual_seed(0)
    if kind == "pntk":
        V = torch.randn(3, 4, generator=g, dtype=torch.float64)
        assert rel_err(op @ V, ref @ V) <= 1e-10
    else:
        V = torch.randn(3, 2, 4, generator=g, dtype=torch.float64)
        assert rel_err(op @ V, torch.einsum("ijab,jbk->iak", ref, V)) <= 1e-10


class DrawnHead(nn.Module):
    """An embedding (maybe with a padding id) tied to a head (maybe with a bias) over a few tokens; the output
    is the logits of ``rows``, at the last position or summed over positions."""

    def __init__(self, V: int, d: int, padding: bool, bias: bool, rows: list[int], pooled: bool, seed: int):
        super().__init__()
        torch.manual_seed(seed)
        self.embed = nn.Embedding(V, d, padding_idx=0 if padding else None)
        self.mix = nn.Linear(d, d)
        self.head = nn.Linear(d, V, bias=bias)
        self.head.weight = self.embed.weight
        self.rows, self.pooled = rows, pooled

    def forward(self, ids):
        logits = self.head(torch.tanh(self.mix(self.embed(ids))))
        return (logits.sum(1) if self.pooled else logits[:, -1])[:, self.rows]


@settings(max_examples=25, deadline=None)
@given(
    V=st.integers(2, 9),
    d=st.integers(1, 4),
    T=st.integers(1, 4),
    padding=st.booleans(),
    bias=st.booleans(),
    pooled=st.booleans(),
    picks=st.lists(st.integers(0, 8), min_size=1, max_size=4),
    N=st.tuples(st.integers(1, 5), st.integers(1, 4)),
    batch_size=st.integers(1, 4),
    kind=st.sampled_from(KINDS),
    seed=st.integers(0, 2**16),
)
def test_drawn_tied_heads_equal_the_brute_force(V, d, T, padding, bias, pooled, picks, N, batch_size, kind, seed):
    rows = [p % V for p in picks]
    model = DrawnHead(V, d, padding, bias, rows, pooled, seed).eval()
    g = torch.Generator().manual_seed(seed)
    x1, x2 = (torch.randint(0, V, (n, T), generator=g) for n in N)
    fm = functional_model(model, Inputs.from_user(x1))
    assert [layer.support for layer in plan(fm, fm.sample, Kind(kind))[0] if layer.heads] == [tuple(sorted(set(rows)))]
    for a, b in ((x1, None), (x1, x2)):
        got = pntk.kernel(model, a, b, kind=kind, engine="structured", dtype=torch.float64, batch_size=batch_size)
        ref = reference_kernel(model, a, b, kind)
        assert rel_err(got, ref) <= 1e-10 or (ref.abs().max() == 0 and got.abs().max() == 0)


def test_auto_switches_to_the_jacobian_engine_when_the_rows_change():
    """``auto`` chose the structured engine, whose plan does not hold for a later block: it says so and
    computes the kernel with the Jacobian engine, exactly."""
    model = OwnWord()
    ids = token_inputs(4, 4, pad=False)["input_ids"]
    ids[:, 0] = torch.tensor([3, 3, 8, 9])
    with pytest.warns(UserWarning, match="computing the kernel with the Jacobian engine instead"):
        got = pntk.pntk(model, ids, dtype=torch.float64)
    assert rel_err(got, reference_kernel(model, ids, None, "pntk")) <= 1e-10
    with pytest.raises(StructureChangedError):
        pntk.pntk(model, ids, engine="structured", dtype=torch.float64)
