"""``engine="auto"``: the cost model that weighs the structured engine against the Jacobian engine when some
parameters have no rule."""

from __future__ import annotations

import warnings

import pytest
import torch
from torch import nn

import pntk
from pntk.kernels.fallback import FallbackWarning
from reference import reference_kernel


class Positions(nn.Module):
    """Tokens plus a learned position table (no rule: it has no sample axis), a dense layer on every token
    (``T = 8`` positions: materialised, so its contraction costs what the Jacobian engine's does)."""

    def __init__(self, T=8, d=16):
        super().__init__()
        self.pos = nn.Parameter(torch.randn(T, d) / 4)
        self.fc = nn.Linear(d, d)
        self.head = nn.Linear(d, 2)

    def forward(self, x):
        return self.head(torch.tanh(self.fc(x + self.pos)).mean(1))


class Untraceable(Positions):
    """The same, with a ``.item()`` that ``vmap`` cannot trace."""

    def forward(self, x):
        if x.abs().max().item() > 1e6:
            raise ValueError("inputs out of range")
        return super().forward(x)


class Scaled(nn.Module):
    """A wide dense layer (factored: ``T = 1``) and a learned scale ``exp(α)`` without a rule (a product with
    ``α`` itself would be a scale by operation)."""

    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(64, 256)
        self.fc2 = nn.Linear(256, 2)
        self.alpha = nn.Parameter(torch.tensor(1.5))

    def forward(self, x):
        return self.fc2(torch.tanh(self.fc1(x)) * self.alpha.exp())


def chosen(model, x, kind="pntk") -> str:
    return pntk.plan(model, x, kind=kind).engine


def test_all_ruled_is_structured():
    net = nn.Sequential(nn.Linear(16, 16), nn.Tanh(), nn.Linear(16, 2))
    assert chosen(net, torch.randn(4, 16)) == "structured"


def test_materialised_layers_and_a_fallback_pick_jacobian():
    """The structured engine would run the Jacobian engine's pass for ``pos`` on top of its own and save
    nothing in the contraction."""
    torch.manual_seed(0)
    model, x = Positions().eval(), torch.randn(64, 8, 16)
    assert chosen(model, x) == "jacobian"
    e = pntk.explain(model, x)
    assert e.engine.value == "jacobian" and "Jacobian engine alone is cheaper" in e.reason
    assert e.ruled_fraction >= 0.5


def test_untraceable_model_stays_structured():
    """Without ``vmap`` the Jacobian engine loops over samples for every parameter, the structured one only
    for its unruled parameters; ``auto`` stays exact."""
    torch.manual_seed(0)
    model, x = Untraceable().eval(), torch.randn(6, 8, 16)
    assert chosen(model, x) == "structured"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FallbackWarning)
        K = pntk.pntk(model, x, dtype=torch.float64)
    assert torch.allclose(K, reference_kernel(model, x, None, "pntk"), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("N, engine", [(2, "jacobian"), (64, "structured")])
def test_factored_saving_grows_with_pairs(N, engine):
    """Factoring saves per pair of samples, the extra passes cost per sample: more samples favour structured."""
    torch.manual_seed(0)
    model = Scaled().eval()
    assert chosen(model, torch.randn(N, 64)) == engine
