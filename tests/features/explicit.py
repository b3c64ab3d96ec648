"""The explicit projection matrix behind a feature map, and features from the float64 brute-force Jacobian.

A feature map never forms ``R``; for a small model these helpers do, from the map's own random blocks, so that
``Φ = J R / √k`` can be checked against the reference Jacobian with no structure at all.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from pntk.features import FeatureMap
from pntk.kernels.structured.rules import EmbeddingRule
from reference import jacobian


def explicit_R(fmap: FeatureMap, x, names: list[str]) -> list[Tensor]:
    """``R^{(a)} ∈ R^{P×k}`` per output row ``a`` (one for the pNTK and eNTK, ``O`` for the trace), rows in
    the order of ``names``."""
    (plan,) = fmap._plans.values()
    fm, k = plan.fm, fmap.k
    rows_per_output = plan.fm.num_outputs if fmap.kind.value == "trace" else 1
    blocks: dict[str, list[Tensor]] = {}
    for layer in plan.layers:
        proj = plan.kronecker.get(layer.module)
        if proj is None:
            continue
        G, M, _ = proj.R_out.shape
        b = proj.blocks
        c_out, c_in = proj.R_out.shape[-1] // b, proj.R_in.shape[-1] // b
        Ro = proj.R_out.view(G, M, b, c_out)
        Ri = proj.R_in.view(G, -1, b, c_in)
        C = torch.einsum("gpbi,gqbj->gpqbij", Ro, Ri).reshape(G, M, Ri.shape[1], k)
        m = M // rows_per_output
        for a in range(rows_per_output):
            Ca = C[:, a * m : (a + 1) * m]  # [G, m, n', k]
            if layer.weight is not None:
                n = Ca.shape[2] - (1 if layer.bias else 0)
                W = Ca[:, :, :n]  # the gradient ws·Σ DᵀA carries the scale, R does not
                if isinstance(layer.rule, EmbeddingRule):  # weight [V, m] is Gᵀ
                    W = W[0].transpose(0, 1)
                blocks.setdefault(layer.weight, []).append(W.reshape(-1, k))
            if layer.bias is not None:
                blocks.setdefault(layer.bias, []).append(Ca[:, :, -1].reshape(-1, k))
    for name in plan.dense.sizes:
        R = plan.dense.rows(name)
        p = fm.params[name].numel()
        blocks[name] = [R[a * p : (a + 1) * p] for a in range(rows_per_output)]
    missing = [n for n in names if n not in blocks]
    assert not missing, f"no projection for {missing}"
    return [torch.cat([blocks[n][a] for n in names]).double() for a in range(rows_per_output)]


def reference_features(fmap: FeatureMap, model: nn.Module, x, names: list[str] | None = None) -> Tensor:
    """``Φ = J R / √k`` from the brute-force Jacobian ``[N, O, P]`` and the explicit ``R``."""
    names = names or [n for n, p in model.named_parameters() if p.requires_grad]
    J = jacobian(model, x, names)  # [N, O, P]
    Rs = explicit_R(fmap, x, names)
    N, O, _ = J.shape
    k = fmap.k
    if fmap.kind.value == "pntk":
        return J.sum(1) / math.sqrt(O) @ Rs[0] / math.sqrt(k)
    if fmap.kind.value == "entk":
        return J @ Rs[0] / math.sqrt(k)
    return sum(J[:, a] @ Rs[a] for a in range(O)) / math.sqrt(O * k)
