"""``FeatureKernel``: the kernel ``Φ1 Φ2ᵀ`` of features, as a linear operator that is never formed."""

from __future__ import annotations

from collections.abc import Iterator
from typing import cast

import numpy as np
import torch
from scipy.sparse.linalg import LinearOperator as ScipyOperator
from torch import Tensor

from ..operators.base import LinearOperator
from .store import FeatureStore

Features = Tensor | np.ndarray | FeatureStore


class FeatureKernel(LinearOperator):
    """The linear operator ``K̂ = Φ1 Φ2ᵀ`` of features ``Φ1`` ``[N1, k]`` and ``Φ2`` ``[N2, k]``.

    eNTK features ``[N, O, k]`` give the ``(N1·O) × (N2·O)`` matrix with row ``n·O + a`` (the eNTK's sample-major
    layout). A product costs ``(N1 + N2)·k`` multiply-adds per column instead of ``N1·N2``. It is a pntk
    operator, so every analysis that takes one accepts it and never forms it:
    :func:`pntk.analysis.extreme_eigenvalues`, :func:`pntk.analysis.kernel_regression`,
    :func:`pntk.analysis.gradient_flow`, :func:`pntk.analysis.compare`, :mod:`pntk.solvers`. The whole
    spectrum comes from the ``k × k`` Gram (:meth:`eigenvalues`), ridge regression from a ``k × k`` solve
    (:class:`pntk.features.FeatureRidge`).

    Features in a :class:`~pntk.features.FeatureStore` (:func:`pntk.compute_features`) are read a block of
    rows at a time in every product, so that ``Φ`` is never held whole (except by :meth:`to_dense`).

    Args:
        Phi1: ``[N1, k]`` or ``[N1, O, k]`` features (torch tensor, NumPy array or feature store).
        Phi2: ``[N2, k]`` or ``[N2, O, k]`` features of the same map; ``None`` for ``Phi1`` (symmetric).

    Raises:
        ValueError: features of different widths, output counts or ranks.

    Example:
        >>> import torch
        >>> Phi = torch.randn(5, 3, dtype=torch.float64)
        >>> K = FeatureKernel(Phi)
        >>> v = torch.ones(5, dtype=torch.float64)
        >>> K.shape, torch.allclose(K @ v, Phi @ (Phi.T @ v))
        ((5, 5), True)
        >>> torch.allclose(K.diagonal(), (Phi**2).sum(1))
        True
    """

    def __init__(self, Phi1: Features, Phi2: Features | None = None) -> None:
        Phi1 = _features(Phi1)
        Phi2 = Phi1 if Phi2 is None else _features(Phi2)
        if len(Phi1.shape) not in (2, 3) or len(Phi1.shape) != len(Phi2.shape):
            raise ValueError(
                f"features must both be [N, k] or both [N, O, k]; got shapes {list(Phi1.shape)} and {list(Phi2.shape)}"
            )
        if Phi1.shape[1:] != Phi2.shape[1:]:
            raise ValueError(
                f"features of shapes {list(Phi1.shape)} and {list(Phi2.shape)} come from different maps; sketch both "
                "inputs with the same k, kind and seed"
            )
        self.Phi1, self.Phi2 = Phi1, Phi2
        O = Phi1.shape[1] if len(Phi1.shape) == 3 else 1
        if isinstance(Phi1, FeatureStore):
            dtype, device = torch.from_numpy(np.empty(0, Phi1.dtype)).dtype, torch.device("cpu")
        else:
            dtype, device = Phi1.dtype, Phi1.device
        super().__init__((Phi1.shape[0] * O, Phi2.shape[0] * O), dtype, device)

    @property
    def outputs(self) -> int:
        """Rows per sample: ``O`` for eNTK features, else 1."""
        return self.Phi1.shape[1] if len(self.Phi1.shape) == 3 else 1

    @property
    def k(self) -> int:
        """The number of features."""
        return self.Phi1.shape[-1]

    def _transpose(self) -> FeatureKernel:
        """``Φ2 Φ1ᵀ``."""
        return FeatureKernel(self.Phi2, self.Phi1)

    def _matmat(self, V: Tensor) -> Tensor:
        return cast(Tensor, self @ V)

    def _rmatmat(self, U: Tensor) -> Tensor:
        return cast(Tensor, self._transpose() @ U)

    def _flat(self, Phi: Tensor | FeatureStore) -> Tensor:
        """All of ``Φ`` as rows ``[N·O, k]`` (a store is read whole)."""
        return torch.as_tensor(Phi.numpy() if isinstance(Phi, FeatureStore) else Phi).reshape(-1, self.k)

    def _blocks(self, Phi: Tensor | FeatureStore) -> Iterator[tuple[slice, Tensor]]:
        """``Φ`` as blocks of rows ``[B·O, k]`` and their rows of the flat ``[N·O, k]``: a store's chunks, or a
        tensor whole."""
        if not isinstance(Phi, FeatureStore):
            yield slice(0, Phi.shape[0] * self.outputs), Phi.reshape(-1, self.k)
            return
        O = self.outputs
        for rows, block in Phi.blocks():
            yield slice(rows.start * O, rows.stop * O), block.reshape(-1, self.k)

    def __matmul__(self, V: Tensor | np.ndarray) -> Tensor | np.ndarray:
        """``K̂ V`` for ``V`` ``[N2]`` or ``[N2, c]`` (eNTK: ``[N2, O]``, ``[N2, O, c]`` or flat ``[N2·O]``,
        ``[N2·O, c]``); the result has ``V``'s layout with ``N1`` rows, and its type (tensor or NumPy)."""
        numpy = isinstance(V, np.ndarray)
        W = torch.as_tensor(V, device=self.device)
        W = W.to(torch.promote_types(W.dtype, self.dtype)) if W.is_floating_point() else W.to(self.dtype)
        N2, O = self.shape[1], self.outputs
        structured = O > 1 and W.dim() >= 2 and tuple(W.shape[:2]) == (self.Phi2.shape[0], O)
        if W.dim() == 0 or W.shape[0] * (O if structured else 1) != N2:
            raise ValueError(f"cannot multiply the {self.shape} feature kernel with an array of shape {list(W.shape)}")
        trailing = tuple(W.shape[2 if structured else 1 :])
        W = W.reshape(N2, -1)
        Z = sum((P.to(W).T @ W[rows] for rows, P in self._blocks(self.Phi2)), W.new_zeros(self.k, W.shape[1]))
        out = torch.cat([P.to(W) @ Z for _, P in self._blocks(self.Phi1)])
        out = out.reshape(((self.Phi1.shape[0], O) if structured else (self.shape[0],)) + trailing)
        return out.cpu().numpy() if numpy else out

    def diagonal(self) -> Tensor:
        """``diag(Φ1 Φ2ᵀ)`` ``[N1]`` (``[N1·O]``) for a square operator.

        Raises:
            ValueError: for a rectangular one.
        """
        if self.shape[0] != self.shape[1]:
            raise ValueError(f"a {self.shape} feature kernel has no diagonal; it is not square")
        if self.Phi2 is self.Phi1:
            return torch.cat([P.square().sum(-1) for _, P in self._blocks(self.Phi1)])
        return (self._flat(self.Phi1) * self._flat(self.Phi2)).sum(-1)

    def gram(self) -> Tensor:
        """``Φ1ᵀ Φ1`` ``[k, k]``, whose nonzero eigenvalues are those of ``Φ1 Φ1ᵀ``."""
        return sum((P.T @ P for _, P in self._blocks(self.Phi1)), torch.zeros(self.k, self.k, dtype=self.dtype))

    def eigenvalues(self) -> Tensor:
        """The eigenvalues of ``Φ Φᵀ`` (symmetric operators), descending: its ``min(N·O, k)`` possibly nonzero
        ones, from the ``k × k`` Gram in float64 (``O(N k²)``; the rest are zero).

        Raises:
            ValueError: for an operator built from two different feature sets.
        """
        if self.Phi2 is not self.Phi1:
            raise ValueError("eigenvalues() needs a symmetric feature kernel FeatureKernel(Phi)")
        if self.shape[0] >= self.k:
            G = torch.zeros(self.k, self.k, dtype=torch.float64)
            for _, P in self._blocks(self.Phi1):
                P = P.double().cpu()
                G += P.T @ P
            lam = torch.linalg.eigvalsh(G)
        else:
            P = self._flat(self.Phi1).double()
            lam = torch.linalg.eigvalsh(P @ P.T)
        return lam.flip(0).clamp(min=0)

    def to_dense(self, chunk: int = 0) -> Tensor:
        """``Φ1 Φ2ᵀ`` as a matrix ``[N1, N2]`` (``[N1·O, N2·O]``): ``N1·N2`` numbers, in one product of the
        features (``chunk`` is not used: there are no unit vectors to multiply)."""
        return self._flat(self.Phi1) @ self._flat(self.Phi2).T

    def to_scipy(self) -> ScipyOperator:
        """A float64 SciPy ``LinearOperator`` view (products stay ``O((N1 + N2) k)``; a store is streamed)."""
        if isinstance(self.Phi1, FeatureStore) or isinstance(self.Phi2, FeatureStore):
            T = self._transpose()

            def product(op: FeatureKernel, V: np.ndarray) -> np.ndarray:
                return np.asarray(op @ np.asarray(V, dtype=np.float64))

            return ScipyOperator(
                self.shape,
                matvec=lambda v: product(self, np.asarray(v).reshape(-1)),
                matmat=lambda V: product(self, V),
                rmatvec=lambda v: product(T, np.asarray(v).reshape(-1)),
                rmatmat=lambda V: product(T, V),
                dtype=np.float64,
            )
        P1 = self._flat(self.Phi1).detach().cpu().double().numpy()
        P2 = self._flat(self.Phi2).detach().cpu().double().numpy()
        return ScipyOperator(
            self.shape,
            matvec=lambda v: P1 @ (P2.T @ np.asarray(v).reshape(-1)),
            matmat=lambda V: P1 @ (P2.T @ V),
            rmatvec=lambda v: P2 @ (P1.T @ np.asarray(v).reshape(-1)),
            rmatmat=lambda V: P2 @ (P1.T @ V),
            dtype=np.float64,
        )


def _features(Phi: Features) -> Tensor | FeatureStore:
    return Phi if isinstance(Phi, FeatureStore) else torch.as_tensor(Phi)
