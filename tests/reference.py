"""A float64 brute-force reference: explicit full Jacobians, one ``torch.autograd.grad`` per sample and output.

No ``torch.func``, no tiling, no structure: the slowest and plainest computation of every kind, against which
each engine is checked.
"""

from __future__ import annotations

import copy

import torch
from torch import Tensor, nn


def jacobian(model: nn.Module, x, names: list[str] | None = None, output=None) -> Tensor:
    """``J``, ``[N, O, P]`` in float64: row ``(n, a)`` is ``∂f_a(x_n)/∂θ`` for the chosen parameters.

    Args:
        model: the network (copied and cast to float64; the original is untouched).
        x: a tensor ``[N, ...]``, a tuple of them (positional) or a dict of them (by keyword).
        names: the parameters ``θ`` (default: all with ``requires_grad``).
        output: a callable that turns the model's output into ``[1, O]`` (default: the output itself).
    """
    model = copy.deepcopy(model).double()
    keys = list(x) if isinstance(x, dict) else None
    xs = tuple(x.values()) if keys else x if isinstance(x, tuple) else (x,)
    xs = tuple(t.double() if t.is_floating_point() else t for t in xs)
    named = dict(model.named_parameters())
    params = [named[n] for n in (names or [n for n, p in named.items() if p.requires_grad])]
    rows = []
    for n in range(xs[0].shape[0]):
        sample = [t[n : n + 1] for t in xs]
        out = model(**dict(zip(keys, sample))) if keys else model(*sample)
        out = (out if output is None else output(out))[0]
        for a in range(out.shape[0]):
            grads = torch.autograd.grad(out[a], params, retain_graph=True, allow_unused=True)
            rows.append(
                torch.cat([(g if g is not None else torch.zeros_like(p)).reshape(-1) for g, p in zip(grads, params)])
            )
    O = rows and len(rows) // xs[0].shape[0]
    return torch.stack(rows).reshape(xs[0].shape[0], O, -1)


def reference_kernel(
    model: nn.Module, x1, x2=None, kind: str = "entk", names: list[str] | None = None, output=None
) -> Tensor:
    """The kernel of ``kind`` from explicit Jacobians, float64: ``[N1, N2, O, O]`` or ``[N1, N2]``."""
    J1 = jacobian(model, x1, names, output)
    J2 = J1 if x2 is None else jacobian(model, x2, names, output)
    theta = torch.einsum("iap,jbp->ijab", J1, J2)
    O = theta.shape[-1]
    if kind == "entk":
        return theta
    if kind == "trace":
        return theta.diagonal(dim1=2, dim2=3).sum(-1) / O
    if kind == "pntk":
        return theta.sum((2, 3)) / O
    raise ValueError(kind)


def rel_err(a: Tensor, b: Tensor) -> float:
    """``max|a − b| / max|b|``, in float64."""
    return ((a.double() - b.double()).abs().max() / b.double().abs().max()).item()
