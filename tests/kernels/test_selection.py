"""Output selection (``output=``), parameter selection (``params=`` patterns and predicates) and per-layer
kernels (``by_layer=True``), against the float64 brute force on the selected outputs and parameters."""

from __future__ import annotations

import fnmatch
import warnings

import pytest
import torch
from torch import nn

import pntk
from architectures import BY_NAME, gpt2_lm, token_inputs
from pntk.kernels.outputs import LabelWords
from pntk.kernels.selection import group_of, select_params
from reference import reference_kernel

pytest.importorskip("transformers")

ENGINES = ["auto", "jacobian", "vp", "structured"]
KINDS = ["entk", "trace", "pntk"]


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a.double() - b.double()).abs().max() / b.double().abs().max()).item()


@pytest.fixture(autouse=True)
def _quiet():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # fallback notes and functorch's performance notes
        yield


# --- output= ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("engine", ENGINES)
def test_label_words_of_a_language_model(engine):
    """The eNTK over the logits of two label words at the last position of a causal LM's ``[B, L, V]``."""
    model = gpt2_lm()
    x = token_inputs(4, 0, pad=False)
    select = LabelWords(ids=[5, 11, 17], position=-1)
    for kind in KINDS:
        got = pntk.kernel(model, x, kind=kind, engine=engine, dtype=torch.float64, output=select, batch_size=3)
        ref = reference_kernel(model, x, None, kind, output=select)
        assert got.shape[:2] == (4, 4) and (kind != "entk" or got.shape[2:] == (3, 3))
        assert rel_err(got, ref) <= 1e-10, kind


def test_output_callable_and_field():
    model = BY_NAME["gpt2"].build()
    x = token_inputs(3, 1)
    by_field = pntk.entk(model, x, output="logits", dtype=torch.float64)
    by_callable = pntk.entk(model, x, output=lambda out: out.logits[:, :2], dtype=torch.float64)
    assert rel_err(by_field, reference_kernel(model, x, None, "entk", output=lambda out: out.logits)) <= 1e-10
    assert torch.allclose(by_callable, by_field[:, :, :2, :2], rtol=1e-10, atol=0)


def test_output_errors_say_what_to_do():
    model = BY_NAME["gpt2"].build()
    x = token_inputs(2, 0)
    with pytest.raises(ValueError, match="output='logits'"):
        pntk.pntk(model, x)
    with pytest.raises(ValueError, match="LabelWords"):
        pntk.pntk(gpt2_lm(), x, output="logits")
    with pytest.raises(ValueError, match="no field 'scores'"):
        pntk.pntk(model, x, output="scores")
    with pytest.raises(ValueError, match="outside the vocabulary"):
        pntk.pntk(gpt2_lm(), x, output=LabelWords(ids=[10_000]))
    with pytest.raises(ValueError, match="integer vocabulary ids"):
        LabelWords(ids=[])
    with pytest.raises(TypeError, match="output= must be"):
        pntk.pntk(model, x, output=3)


# --- params= ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "params",
    ["score.*", ["*.attn.c_attn.*", "*.ln_f.*"], "transformer.h.1.*"],
    ids=["head", "attention+norm", "last-block"],
)
@pytest.mark.parametrize("engine", ENGINES)
def test_param_patterns(params, engine):
    model = BY_NAME["gpt2"].build()
    x = token_inputs(4, 2)
    patterns = [params] if isinstance(params, str) else params
    names = [n for n, _ in model.named_parameters() if any(fnmatch.fnmatchcase(n, p) for p in patterns)]
    assert names
    for kind in KINDS:
        got = pntk.kernel(model, x, kind=kind, engine=engine, params=params, output="logits", dtype=torch.float64)
        ref = reference_kernel(model, x, None, kind, names=names, output=lambda out: out.logits)
        assert rel_err(got, ref) <= 1e-10, kind


def test_param_predicate_and_frozen_parameters():
    """A predicate chooses among all parameters, frozen ones too; the default takes the trainable ones."""
    model = BY_NAME["timm"].build()
    for p in model.parameters():
        p.requires_grad_(False)
    x = BY_NAME["timm"].inputs(4, 0)
    with pytest.raises(ValueError, match="no trainable parameters"):
        pntk.pntk(model, x)
    names = [n for n, p in model.named_parameters() if p.dim() == 1]
    got = pntk.pntk(model, x, params=lambda name, p: p.dim() == 1, dtype=torch.float64)
    for n, p in model.named_parameters():
        p.requires_grad_(n in names)  # the reference differentiates the trainable ones
    assert rel_err(got, reference_kernel(model, x, None, "pntk", names=names)) <= 1e-10


def test_param_selection_errors():
    net = nn.Sequential(nn.Linear(2, 3), nn.Linear(3, 1))
    with pytest.raises(ValueError, match="match no parameter"):
        select_params(net, "classifier.*")
    with pytest.raises(ValueError, match="not parameters"):
        select_params(net, {"head.weight": torch.zeros(1)})
    with pytest.raises(ValueError, match="params= must be"):
        select_params(net, 3)
    assert list(select_params(net, ["1.*", "0.bias"])) == ["0.bias", "1.weight", "1.bias"]


# --- by_layer= ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("name", ["gpt2", "timm", "lstm", "encoder-mask"])
def test_by_layer_parts(name, engine):
    """Each part is the kernel of its module's parameters; the parts sum to the whole kernel to 1e-12."""
    case = BY_NAME[name]
    model, x = case.build(), case.inputs(5, 3)
    groups: dict[str, list[str]] = {}
    for n, _ in model.named_parameters():
        groups.setdefault(group_of(n), []).append(n)
    select = None if case.output is None else (lambda out: out.logits)
    for kind in KINDS:
        options = dict(kind=kind, engine=engine, dtype=torch.float64, batch_size=3, output=case.output)
        parts = pntk.kernel(model, x, by_layer=True, **options)
        whole = pntk.kernel(model, x, **options)
        assert list(parts) == list(groups)
        assert rel_err(sum(parts.values()), whole) <= 1e-12, kind
        for g in list(groups)[:: max(1, len(groups) // 3)]:  # a few parts against the brute force
            ref = reference_kernel(model, x, None, kind, names=groups[g], output=select)
            assert (parts[g] - ref).abs().max() <= 1e-10 * whole.abs().max(), (kind, g)
