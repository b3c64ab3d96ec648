"""The per-layer breakdown against a direct computation from per-group eNTKs of the brute force."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

import pntk
from pntk.analysis import layer_breakdown
from reference import reference_kernel


def net():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 16), nn.Tanh(), nn.Linear(16, 16), nn.Tanh(), nn.Linear(16, 3)).eval()


def test_breakdown_matches_brute_force(tmp_path):
    model, x = net(), torch.randn(6, 4, generator=torch.Generator().manual_seed(1))
    parts = pntk.entk(model, x, by_layer=True, dtype=torch.float64)
    b = layer_breakdown(parts)
    assert [s.layer for s in b.layers] == ["0", "2", "4"]
    Theta = reference_kernel(model, x, None, "entk").numpy()
    O = Theta.shape[-1]

    def error(T):
        return T - (T.sum((2, 3)) / O)[:, :, None, None] * np.eye(O)

    E = error(Theta)
    for s in b.layers:
        i = s.layer
        T_l = reference_kernel(model, x, None, "entk", names=[f"{i}.weight", f"{i}.bias"]).numpy()
        assert s.trace_share == pytest.approx(np.einsum("nnaa->", T_l) / np.einsum("nnaa->", Theta), rel=1e-10)
        assert s.error_share == pytest.approx((error(T_l) * E).sum() / (E * E).sum(), rel=1e-9)
        assert s.relative_error == pytest.approx(np.linalg.norm(error(T_l)) / np.linalg.norm(T_l), rel=1e-9)
    assert sum(s.trace_share for s in b.layers) == pytest.approx(1, abs=1e-12)
    assert sum(s.error_share for s in b.layers) == pytest.approx(1, abs=1e-12)
    assert b.relative_error == pytest.approx(np.linalg.norm(E) / np.linalg.norm(Theta), rel=1e-10)
    assert b.as_dict()["layers"][0]["layer"] == "0"
    pytest.importorskip("matplotlib")
    fig = b.plot(tmp_path / "layers.png")
    assert (tmp_path / "layers.png").stat().st_size > 0 and len(fig.axes) == 1


def test_breakdown_errors():
    with pytest.raises(ValueError, match="at least one part"):
        layer_breakdown({})
    with pytest.raises(ValueError, match="one shape"):
        layer_breakdown({"a": np.zeros((2, 2, 3, 3)), "b": np.zeros((2, 2))})
