"""Which layers the kernel comes from: a per-layer breakdown of the eNTK and of ``Θ − K⊗I``.

The eNTK is a sum over parameter groups, ``Θ = Σ_l Θ_l`` (``pntk.entk(..., by_layer=True)``), and the pNTK is
linear in it, ``K_l = (1/O) 1ᵀ Θ_l 1``, so the error splits too: ``E = Θ − K⊗I = Σ_l E_l`` with
``E_l = Θ_l − K_l⊗I``. Per layer:

- its share of the trace, ``tr Θ_l / tr Θ`` (non-negative, summing to 1): how much of the kernel's scale
  the layer holds;
- its share of the error, ``⟨E_l, E⟩_F / ‖E‖_F²`` (summing to 1; negative when the layer's error partly
  cancels the others'): how much of ``‖Θ − K⊗I‖_F²`` it accounts for;
- its own relative error ``‖E_l‖_F / ‖Θ_l‖_F``: how well its pNTK stands in for its eNTK.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from pntk.analysis._linalg import ArrayLike, as_float64

__all__ = ["LayerBreakdown", "LayerShare", "layer_breakdown"]


@dataclass(frozen=True)
class LayerShare:
    """One parameter group's part of the kernel.

    Attributes:
        layer: the group (module path; ``""`` for the root module's own parameters).
        trace_share: ``tr Θ_l / tr Θ`` (``nan`` for a cross kernel ``Θ(x1, x2)``, which has no trace).
        error_share: ``⟨E_l, E⟩_F / ‖E‖_F²`` (``nan`` when ``E = 0``).
        relative_error: ``‖Θ_l − K_l⊗I‖_F / ‖Θ_l‖_F`` (``nan`` when ``Θ_l = 0``).
    """

    layer: str
    trace_share: float
    error_share: float
    relative_error: float


@dataclass(frozen=True)
class LayerBreakdown:
    """Every layer's share, in the order of the parts given, and the whole kernel's relative error."""

    layers: list[LayerShare]
    relative_error: float

    def as_dict(self) -> dict[str, Any]:
        """Plain numbers, for JSON."""
        return {
            "relative_error": self.relative_error,
            "layers": [vars(s) for s in self.layers],
        }

    def plot(self, path: str | Path | None = None, *, title: str = "Where the kernel comes from") -> Any:
        """A bar chart of each layer's share of ``tr Θ`` and of ``‖Θ − K⊗I‖_F²``; written as PNG to ``path``
        if given. Returns the matplotlib ``Figure`` (matplotlib is imported here, with the Agg canvas)."""
        from matplotlib.figure import Figure

        names = [s.layer or "(root)" for s in self.layers]
        y = np.arange(len(names))
        fig = Figure(figsize=(7.5, 1.2 + 0.28 * len(names)), layout="constrained")
        ax = fig.subplots()
        ax.barh(y - 0.2, [s.trace_share for s in self.layers], height=0.4, label="share of tr Θ")
        ax.barh(y + 0.2, [s.error_share for s in self.layers], height=0.4, label="share of ‖Θ − K⊗I‖²")
        ax.set_yticks(y, names, fontsize=7)
        ax.invert_yaxis()
        ax.axvline(0, color="black", linewidth=0.6)
        ax.set_xlabel("share")
        ax.set_title(f"{title} (‖Θ − K⊗I‖/‖Θ‖ = {self.relative_error:.3g})", fontsize=10)
        ax.legend(fontsize=8)
        if path is not None:
            Path(path).parent.mkdir(parents=True, exist_ok=True)
            fig.savefig(path, dpi=120)
        return fig


def layer_breakdown(Theta_parts: Mapping[str, ArrayLike]) -> LayerBreakdown:
    """Each layer's share of the eNTK's trace and of ``‖Θ − K⊗I‖_F²``, from the per-layer eNTKs.

    Args:
        Theta_parts: ``{layer: Θ_l}``, each ``[N1, N2, O, O]`` (``pntk.entk(model, x, by_layer=True)``).

    Returns:
        A :class:`LayerBreakdown`, in float64.

    Raises:
        ValueError: no parts, parts of different shapes, or parts that are not ``[N1, N2, O, O]``.

    Example:
        >>> import torch, pntk
        >>> net = torch.nn.Sequential(torch.nn.Linear(3, 8), torch.nn.Tanh(), torch.nn.Linear(8, 2))
        >>> parts = pntk.entk(net, torch.randn(5, 3), by_layer=True, dtype=torch.float64)
        >>> b = pntk.analysis.layer_breakdown(parts)
        >>> [s.layer for s in b.layers], round(sum(s.trace_share for s in b.layers), 12)
        (['0', '2'], 1.0)
    """
    if not Theta_parts:
        raise ValueError("layer_breakdown needs at least one part; pass pntk.entk(..., by_layer=True)")
    parts = {name: as_float64(T) for name, T in Theta_parts.items()}
    shapes = {T.shape for T in parts.values()}
    if len(shapes) != 1 or len(next(iter(shapes))) != 4:
        raise ValueError(
            f"the parts must be eNTKs [N1, N2, O, O] of one shape, got shapes {sorted(map(tuple, shapes))}; "
            "compute them with pntk.entk(model, x, by_layer=True)"
        )
    O = next(iter(shapes))[2]
    eye = np.eye(O)

    def error(T: np.ndarray) -> np.ndarray:
        return T - (T.sum((2, 3)) / O)[:, :, None, None] * eye

    Theta = functools.reduce(np.add, parts.values())
    E = error(Theta)
    square = Theta.shape[0] == Theta.shape[1]  # a trace needs Θ(x, x); a cross kernel has no trace shares
    trace = np.einsum("nnaa->", Theta) if square else 0.0
    norm_E2 = float((E * E).sum())
    shares = []
    for name, T in parts.items():
        E_l = error(T)
        t = np.einsum("nnaa->", T) if square else 0.0
        norm_T = float(np.sqrt((T * T).sum()))
        shares.append(
            LayerShare(
                layer=name,
                trace_share=float(t / trace) if trace else float("nan"),
                error_share=float((E_l * E).sum() / norm_E2) if norm_E2 else float("nan"),
                relative_error=float(np.sqrt((E_l * E_l).sum()) / norm_T) if norm_T else float("nan"),
            )
        )
    norm_Theta = float(np.sqrt((Theta * Theta).sum()))
    return LayerBreakdown(shares, float(np.sqrt(norm_E2) / norm_Theta) if norm_Theta else float("nan"))
