"""Traces and spectral densities of a symmetric positive semi-definite operator from products alone.

- :func:`hutchpp`: ``tr K`` by Hutch++ (Meyer, Musco, Musco & Woodruff 2021): the trace of a low-rank
  sketch captured exactly, Hutchinson's estimator on the rest.
- :func:`spectral_density`: stochastic Lanczos quadrature (Ubaru, Chen & Saad 2017): per random probe ``z``,
  ``zᵀ f(K) z ≈ ‖z‖² Σ_i τ_i f(θ_i)`` with the Ritz values ``θ_i`` and weights ``τ_i`` of a Lanczos run, so
  ``tr f(K) ≈ (n / p) Σ_probes Σ_i τ_i f(θ_i)`` for any ``f``, and a smoothed density of the spectrum.
- :func:`effective_rank`: ``tr K / λ_max`` and the entropy rank ``exp(−Σ p_i log p_i)``, ``p = λ / tr K``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor

from .krylov import lanczos
from .lanczos import eigsh
from .operand import as_operator, product
from .options import SolverOptions

#: Memory of the Lanczos bases of the probes of one group (more probes run in further groups).
BASIS_BYTES = 256 * 2**20


@dataclass(frozen=True)
class TraceEstimate:
    """An estimate of ``tr K``.

    Attributes:
        value: the estimate.
        std_error: the standard error of its random part (0 when the sketch captured everything).
        products: columns multiplied.
    """

    value: float
    std_error: float
    products: int


def hutchpp(K: Any, *, options: SolverOptions | None = None) -> TraceEstimate:
    """``tr K`` by Hutch++ with ``options.num_probes`` products in all (a third sketch, two thirds Hutchinson).

    Args:
        K: ``[n, n]`` symmetric: tensor, array, pntk operator or kernel store.
        options: ``num_probes`` (at least 3), ``seed``.

    Returns:
        :class:`TraceEstimate`. Its error falls as ``1/num_probes`` (Hutchinson's as ``1/√num_probes``).

    Example:
        >>> import torch
        >>> K = torch.diag(torch.tensor([5.0, 1.0, 0.5, 0.1], dtype=torch.float64))
        >>> round(hutchpp(K).value, 10)
        6.6
    """
    options = options or SolverOptions()
    op = as_operator(K)
    n = op.shape[0]
    p = max(3, options.num_probes)
    s = min(p // 3, n)
    g = torch.Generator(device="cpu").manual_seed(options.seed)
    S = torch.randn(n, s, generator=g, dtype=torch.float64).to(op.device)
    G = (torch.randint(0, 2, (n, p - 2 * s), generator=g, dtype=torch.float64) * 2 - 1).to(op.device)
    Q, _ = torch.linalg.qr(product(op, S))
    sketched = (Q * product(op, Q)).sum().item()
    G = G - Q @ (Q.T @ G)
    samples = (G * product(op, G)).sum(0)
    rest = samples.mean().item() if samples.numel() else 0.0
    std = samples.std().item() / math.sqrt(samples.numel()) if samples.numel() > 1 else 0.0
    return TraceEstimate(sketched + rest, std, 2 * s + G.shape[1])


@dataclass(frozen=True)
class SpectralDensity:
    """The spectrum of an ``n × n`` operator as a quadrature: nodes and weights summing to ``n``.

    Attributes:
        nodes: ``[q]`` Ritz values of all probes.
        weights: ``[q]`` their weights, ``n / probes · τ_i``: ``Σ weights·f(nodes) ≈ tr f(K)``.
        n: the operator's size.
        products: columns multiplied.
    """

    nodes: Tensor
    weights: Tensor
    n: int
    products: int

    def trace(self, f: Callable[[Tensor], Tensor]) -> float:
        """``tr f(K) ≈ Σ_i w_i f(θ_i)``."""
        return float((self.weights * f(self.nodes)).sum())

    def density(self, grid: Any, sigma: float) -> np.ndarray:
        """The eigenvalue density on ``grid``, smoothed by a Gaussian of width ``sigma``: eigenvalues per unit.

        Args:
            grid: ``[g]`` points.
            sigma: the width, in the units of the eigenvalues.

        Returns:
            ``[g]`` float64, integrating to about ``n``.
        """
        x = torch.as_tensor(np.asarray(grid, dtype=np.float64))
        z = (x.unsqueeze(1) - self.nodes.cpu().unsqueeze(0)) / sigma
        return ((-0.5 * z.square()).exp() @ self.weights.cpu() / (sigma * math.sqrt(2 * math.pi))).numpy()


def spectral_density(K: Any, *, options: SolverOptions | None = None) -> SpectralDensity:
    """Stochastic Lanczos quadrature: ``options.num_probes`` Rademacher probes, ``options.lanczos_steps`` each.

    Args:
        K: ``[n, n]`` symmetric: tensor, array, pntk operator or kernel store.
        options: ``num_probes``, ``lanczos_steps``, ``seed``, ``progress``.

    Returns:
        :class:`SpectralDensity`. Cost: ``num_probes · lanczos_steps`` product columns, in blocks of probes
        whose Lanczos bases fit :data:`BASIS_BYTES`.

    Example:
        >>> import torch
        >>> K = torch.diag(torch.tensor([4.0, 2.0, 1.0], dtype=torch.float64))
        >>> rho = spectral_density(K)
        >>> round(rho.trace(lambda x: x), 8), round(rho.trace(torch.log), 8)  # exact: the space is invariant
        (7.0, 2.07944154)
    """
    options = options or SolverOptions()
    op = as_operator(K)
    n = op.shape[0]
    m = min(options.lanczos_steps, n)
    group = max(1, min(options.num_probes, BASIS_BYTES // max(1, 8 * n * m)))
    g = torch.Generator(device="cpu").manual_seed(options.seed)
    nodes, weights, products = [], [], 0
    for start in range(0, options.num_probes, group):
        c = min(group, options.num_probes - start)
        Z = (torch.randint(0, 2, (n, c), generator=g, dtype=torch.float64) * 2 - 1).to(op.device)
        tri = lanczos(op, Z, m, progress=options.progress)
        products += c * tri.alpha.shape[1]
        theta, S = torch.linalg.eigh(tri.T)
        nodes.append(theta.reshape(-1))
        weights.append((S[:, 0, :].square() * tri.norms.square().unsqueeze(1)).reshape(-1))
    w = torch.cat(weights) / options.num_probes
    return SpectralDensity(torch.cat(nodes), w, n, products)


@dataclass(frozen=True)
class EffectiveRank:
    """Two effective ranks of a positive semi-definite kernel.

    Attributes:
        trace_ratio: ``tr K / λ_max``.
        entropy: ``exp(−Σ_i p_i log p_i)`` with ``p_i = λ_i / tr K`` (Roy & Vetterli 2007), from stochastic
            Lanczos quadrature unless the trace is known exactly and the operator is small.
        trace: ``tr K`` (exact from the diagonal when the operator has one, else Hutch++).
        lambda_max: ``λ_max`` by block Lanczos.
    """

    trace_ratio: float
    entropy: float
    trace: float
    lambda_max: float


def effective_rank(K: Any, *, options: SolverOptions | None = None) -> EffectiveRank:
    """The effective ranks of a kernel, matrix-free.

    Args:
        K: ``[n, n]`` symmetric positive semi-definite: tensor, array, pntk operator or kernel store.
        options: as for :func:`eigsh`, :func:`hutchpp` and :func:`spectral_density`.

    Returns:
        :class:`EffectiveRank`.

    Example:
        >>> import torch
        >>> r = effective_rank(torch.eye(5, dtype=torch.float64))
        >>> round(r.trace_ratio, 8), round(r.entropy, 8)
        (5.0, 5.0)
    """
    options = options or SolverOptions()
    op = as_operator(K)
    try:
        trace = float(op.diagonal().to(torch.float64).sum())
    except (NotImplementedError, ValueError):
        trace = hutchpp(op, options=options).value
    lambda_max = float(eigsh(op, 1, options=options).eigenvalues[0])
    rho = spectral_density(op, options=options)

    def plogp(x: Tensor) -> Tensor:
        p = x.clamp(min=0) / trace
        return torch.where(p > 0, -p * torch.log(p.clamp(min=1e-300)), torch.zeros_like(p))

    return EffectiveRank(trace / lambda_max, math.exp(rho.trace(plogp)), trace, lambda_max)
