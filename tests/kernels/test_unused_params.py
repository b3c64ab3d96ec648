"""Parameters that no function takes on the probe (a head or bias a configuration leaves unused): their gradient is
zero, so the structured engine neither falls back for them nor gives them a layer, and every block's backward pass
checks that the output still does not depend on them; a model that uses one for later samples only is caught, and
so is one that skips a planned layer for a later block."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import pntk
from pntk.errors import StructureChangedError
from pntk.kernels import Inputs, functional_model
from pntk.kernels.kinds import Kind
from pntk.kernels.structured.plan import plan, unused_params
from reference import reference_kernel, rel_err

KINDS = ["entk", "trace", "pntk"]


class Spare(nn.Module):
    """Two dense layers and a parameter the forward never reads (``spare``), or reads only for samples whose
    first input exceeds 5 (``sometimes=True``)."""

    def __init__(self, sometimes: bool = False):
        super().__init__()
        torch.manual_seed(0)
        self.inner, self.outer = nn.Linear(3, 6), nn.Linear(6, 2)
        self.spare = nn.Parameter(torch.randn(2))
        self.sometimes = sometimes

    def forward(self, x):
        out = self.outer(torch.tanh(self.inner(x)))
        if self.sometimes and bool((x[:, 0] > 5).any()):
            out = out + (x[:, :1] > 5).to(out.dtype) * self.spare
        return out


def inputs(n: int, late: bool = False) -> torch.Tensor:
    x = torch.randn(n, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    if late:
        x[-1, 0] = 9.0  # only the last sample, never probed, reads the parameter
    return x


@pytest.mark.parametrize("kind", KINDS)
def test_an_unused_parameter_costs_nothing_and_the_kernel_is_exact(kind):
    model = Spare().double().eval()
    x = inputs(5)
    fm = functional_model(model, Inputs.from_user(x))
    layers, fallback = plan(fm, fm.sample, Kind(kind))
    assert unused_params(fm, fm.sample, Kind(kind)) == ["spare"] and "spare" not in fallback
    for x2 in (None, inputs(3)):
        got = pntk.kernel(model, x, x2, kind=kind, engine="structured", batch_size=2)
        assert rel_err(got, reference_kernel(model, x, x2, kind)) <= 1e-10
    parts = pntk.kernel(model, x, kind=kind, engine="structured", by_layer=True)
    assert float(parts[""].abs().max()) == 0.0  # the root module's group holds only the unused parameter
    assert rel_err(sum(parts.values()), reference_kernel(model, x, None, kind)) <= 1e-12
    explained = {p.name: p.path for p in pntk.explain(model, x, kind=kind).parameters}
    assert explained["spare"] == "unused"


def test_a_parameter_used_only_by_later_samples_is_caught_on_every_path():
    model = Spare(sometimes=True).double().eval()
    x = inputs(4, late=True)
    ref = reference_kernel(model, x, None, "pntk")
    assert float(ref[-1, -1]) > float(reference_kernel(Spare().double(), x, None, "pntk")[-1, -1])  # it matters
    with pytest.raises(StructureChangedError, match="'spare'.*did not use it"):
        pntk.pntk(model, x, engine="structured", batch_size=2)
    with pytest.warns(UserWarning, match="Jacobian engine instead"):
        got = pntk.pntk(model, x, batch_size=2)
    assert rel_err(got, ref) <= 1e-10
    V = torch.randn(4, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    with pytest.warns(UserWarning, match="vector products instead"):
        product = pntk.operator(model, x, batch_size=2) @ V
    assert rel_err(product, ref @ V) <= 1e-10
    with pytest.raises(StructureChangedError, match="method='dense'"):
        pntk.features(model, x, k=64, batch_size=2)


class Skip(nn.Module):
    """Three dense layers, the middle one skipped for a batch whose samples all have a first input above 5."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.a, self.b, self.c = nn.Linear(3, 4), nn.Linear(4, 4), nn.Linear(4, 2)

    def forward(self, x):
        h = torch.tanh(self.a(x))
        if not bool((x[:, 0] > 5).all()):
            h = torch.tanh(self.b(h))
        return self.c(h)


def test_a_layer_that_a_later_block_does_not_call_is_caught():
    model = Skip().double().eval()
    x = inputs(4)
    x[2:, 0] = 9.0  # the second block of two samples skips the middle layer
    with pytest.raises(StructureChangedError, match="Linear was not called on a block of 2 samples"):
        pntk.pntk(model, x, engine="structured", batch_size=2)
    with pytest.warns(UserWarning, match="Jacobian engine instead"):
        got = pntk.pntk(model, x, batch_size=2)
    assert rel_err(got, reference_kernel(model, x, None, "pntk")) <= 1e-10
