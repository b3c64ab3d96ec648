"""Every kind on every engine, on architectures written elsewhere, against the float64 per-sample brute force.

Hugging Face encoder, decoder and encoder-decoder classifiers built from configs (eager and default
attention), timm-style blocks, ``nn.MultiheadAttention``, ``nn.TransformerEncoder`` with and without a
padding mask, and ``nn.RNN``/``LSTM``/``GRU`` heads (see ``tests/architectures.py``). Where ``torch.func``
cannot trace a model, the engines fall back to exact paths and say so once.
"""

from __future__ import annotations

import functools
import warnings

import pytest
import torch

import pntk
from architectures import BY_NAME, CASES, Case
from pntk.kernels.fallback import FallbackWarning
from pntk.kernels.outputs import output_selector
from reference import reference_kernel

pytest.importorskip("transformers")

KINDS = ["entk", "trace", "pntk"]
ENGINES = ["auto", "jacobian", "vp", "structured"]


#: T5's RMSNorm computes its variance in float32 whatever the model's dtype (on purpose, for half-precision
#: training), so even in float64 two exact computations of its kernel agree only to float32 rounding of that
#: variance; every other model is float64 throughout.
TOLERANCE = {"t5": 1e-7}


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a.double() - b.double()).abs().max() / b.double().abs().max()).item()


@functools.cache
def reference(name: str, kind: str) -> torch.Tensor:
    case = BY_NAME[name]
    return reference_kernel(case.build(), case.inputs(4, 0), None, kind, output=output_selector(case.output))


@pytest.fixture(autouse=True)
def _quiet():
    # functorch's note that a batching rule is missing for fused attention is about speed, not values.
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="There is a performance drop")
        yield


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_every_kind_exact(case: Case, engine: str):
    model = case.build()
    x = case.inputs(4, 0)
    for kind in KINDS:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FallbackWarning)
            got = pntk.kernel(model, x, kind=kind, engine=engine, dtype=torch.float64, batch_size=3, output=case.output)
        ref = reference(case.name, kind)
        assert got.shape == ref.shape
        assert rel_err(got, ref) <= TOLERANCE.get(case.name, 1e-10), (kind, engine)


@pytest.mark.parametrize("name", ["lstm", "gru", "rnn"])
def test_recurrent_cross_kernel(name: str):
    """A cross kernel on blocks of different sizes: the per-sample fallback is not tied to one block size."""
    case = BY_NAME[name]
    model, x1, x2 = case.build(), case.inputs(3, 1), case.inputs(5, 2)
    for engine in ENGINES:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FallbackWarning)
            got = pntk.kernel(model, x1, x2, kind="entk", engine=engine, dtype=torch.float64, batch_size=2)
        assert rel_err(got, reference_kernel(model, x1, x2, "entk")) <= 1e-10, engine


def test_fallback_warns_once_naming_module():
    """The per-sample fallback says why and where, once per model, and gives the exact kernel."""
    case = BY_NAME["gru"]
    model, x = case.build(), case.inputs(4, 0)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        K = pntk.pntk(model, x, engine="jacobian", dtype=torch.float64, batch_size=2)
    messages = [str(w.message) for w in caught if issubclass(w.category, FallbackWarning)]
    assert len(messages) == 1, messages
    assert "rnn (GRU)" in messages[0] and "per-sample" in messages[0]
    assert rel_err(K, reference_kernel(model, x, None, "pntk")) <= 1e-10


def test_vp_falls_back_to_double_vjp():
    """Forward-mode AD is missing for fused attention; vp then uses reverse-over-reverse, with a warning."""
    case = BY_NAME["mha"]
    model, x = case.build(), case.inputs(4, 0)
    with pytest.warns(FallbackWarning, match="reverse-over-reverse"):
        K = pntk.trace_ntk(model, x, engine="vp", dtype=torch.float64)
    assert rel_err(K, reference_kernel(model, x, None, "trace")) <= 1e-10


def test_genuine_errors_are_not_swallowed():
    """A model that fails on one sample too raises its own error, not a fallback's."""

    class Broken(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = torch.nn.Linear(3, 2)

        def forward(self, x):
            if x.shape[0] == 1:
                raise RuntimeError("this model refuses single samples")
            return self.fc(x)

    with pytest.raises(RuntimeError, match="refuses single samples"):
        pntk.pntk(Broken(), torch.randn(4, 3), engine="jacobian")
