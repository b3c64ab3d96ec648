"""Fixtures of the kernel tests."""

import math

import pytest

from pntk.kernels.structured import plan as structured_plan


@pytest.fixture(params=["factored", "materialised"])
def form(request, monkeypatch):
    """Force every factorable layer into one form, whatever the FLOP count says."""
    cost = 0 if request.param == "factored" else math.inf
    monkeypatch.setattr(structured_plan, "factored_cost", lambda *args: cost)
    return request.param
