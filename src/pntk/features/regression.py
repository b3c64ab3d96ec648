"""Kernel ridge regression with a feature kernel, solved in ``k`` dimensions.

With ``K̂ = Φ Φᵀ``, the predictions of kernel ridge regression ``K̂(x, X)(K̂(X, X) + λI)^{-1} r`` equal
``Φ(x) w`` with ``(ΦᵀΦ + λI) w = Φᵀ r`` (push-through identity): a ``k × k`` system, whose Gram ``ΦᵀΦ`` and
right-hand side ``Φᵀ r`` accumulate over chunks of rows, so ``Φ`` is never held whole.
"""

from __future__ import annotations

import warnings

import numpy as np
import torch
from scipy.linalg import blas, cho_factor, cho_solve
from torch import Tensor

from ..analysis import IllConditionedKernelError, IllConditionedKernelWarning, OnSingular
from ..choices import parse_enum
from .store import FeatureStore


def _numpy(a, name: str) -> np.ndarray:
    if isinstance(a, Tensor):
        a = a.detach().cpu().double().numpy()
    a = np.asarray(a, dtype=np.float64)
    if not np.isfinite(a).all():
        raise ValueError(f"{name} contains NaN or Inf")
    return a


def _rows(Phi, name: str) -> tuple[Tensor, int]:
    """Features as rows ``[N·O, k]`` (eNTK ``[N, O, k]`` sample-major) and ``O`` (1 for ``[N, k]``), as a tensor
    of their own floating dtype."""
    Phi = torch.as_tensor(Phi).detach()
    if not Phi.is_floating_point():
        Phi = Phi.double()
    if not bool(torch.isfinite(Phi).all()):
        raise ValueError(f"{name} contains NaN or Inf")
    if Phi.dim() == 2:
        return Phi, 1
    if Phi.dim() == 3:
        return Phi.reshape(-1, Phi.shape[-1]), Phi.shape[1]
    raise ValueError(f"{name} must be [N, k] or [N, O, k] features; got shape {list(Phi.shape)}")


def _lower_gram(P: Tensor) -> np.ndarray:
    """The lower triangle of ``PᵀP`` (zeros above), C-ordered, multiplied in ``P``'s dtype: on the CPU by BLAS
    ``syrk`` (one triangle, half the multiply-adds of a matmul)."""
    if P.device.type == "cpu" and P.dtype in (torch.float32, torch.float64):
        syrk = blas.ssyrk if P.dtype == torch.float32 else blas.dsyrk
        # Pᵀ of a C-ordered P is Fortran-ordered, which BLAS reads without a copy; the Fortran-ordered upper
        # triangle it returns is, transposed, a C-ordered lower one.
        return syrk(1.0, P.numpy().T, trans=0, lower=0).T
    return torch.tril(P.T @ P).cpu().numpy()


class FeatureRidge:
    r"""Ridge regression on features: :math:`(Φ^⊤Φ + λI)\,W = Φ^⊤ (Y − f_0(X))`, predictions
    :math:`f_0(x) + Φ(x) W`.

    With ``[N, k]`` features of a scalar kernel (pNTK, trace NTK) ``W`` is ``[k, O]``: the same kernel for
    each of ``Y``'s ``O`` columns, as :func:`pntk.analysis.kernel_regression` does with a scalar kernel. With
    eNTK features ``[N, O, k]`` the targets are flattened (row ``n·O + a``) and ``W`` is ``[k, 1]``, as the
    eNTK solve does. The result equals kernel ridge regression with ``K̂ = Φ Φᵀ``; with ``ridge = 0`` and a
    singular Gram, the minimum-norm solution (after a warning, by default).

    A :class:`~pntk.features.FeatureStore` (:func:`pntk.compute_features`) is streamed a block of rows at a
    time by :meth:`fit` and :meth:`predict`.

    Memory: one float64 ``k × k`` Gram and ``k × O`` right-hand side, whatever ``N``. Cost: ``N·k²`` to
    accumulate, ``k³/3`` to solve. Each chunk's Gram and ``Φᵀ(Y − f0)`` are computed in the features' dtype
    (float32 features: at the float32 matmul rate) and summed in float64, so rounding grows with the chunk's
    length, not with ``N``.

    Args:
        ridge: ``λ ≥ 0``.
        on_singular: ``"warn"``, ``"raise"`` or ``"ignore"`` when ``ΦᵀΦ + λI`` is not positive definite.

    Example:
        >>> import numpy as np
        >>> Phi, Y = np.eye(3)[:, :2], np.array([[1.0], [2.0], [3.0]])
        >>> FeatureRidge(ridge=0.0).fit(Phi, Y).predict(Phi)  # least squares on two features
        array([[1.],
               [2.],
               [0.]])
        >>> r = FeatureRidge(ridge=1.0)
        >>> for rows in (slice(0, 2), slice(2, 3)):  # rows stream in chunks
        ...     _ = r.partial_fit(Phi[rows], Y[rows])
        >>> r.predict(Phi).round(3)
        array([[0.5],
               [1. ],
               [0. ]])
    """

    def __init__(self, ridge: float = 0.0, *, on_singular: OnSingular | str = "warn") -> None:
        self._coef: np.ndarray | None = None
        self.ridge = ridge
        self.on_singular = parse_enum(OnSingular, on_singular, "on_singular value")
        # The Gram's lower triangle, summed over chunks, which is all LAPACK reads to solve; made symmetric only
        # when `gram` is asked for (per chunk, that copy cost more than the chunk's syrk).
        self._lower: np.ndarray | None = None
        self._gram: np.ndarray | None = None
        self.rhs: np.ndarray | None = None
        self.O = 0
        self.N = 0
        self.squeeze = False

    @property
    def ridge(self) -> float:
        """``λ``; setting it refits from the accumulated Gram on next use (no pass over the rows)."""
        return self._ridge

    @ridge.setter
    def ridge(self, value: float) -> None:
        if not value >= 0:
            raise ValueError(f"ridge must be non-negative; got {value}")
        self._ridge = float(value)
        self._coef = None

    def fit(self, Phi, Y, f0=None) -> FeatureRidge:
        """Fit on all rows at once (forgetting earlier ones).

        Args:
            Phi: ``[N, k]`` or ``[N, O, k]`` features, or a feature store of them (read a block at a time).
            Y: ``[N, O]`` targets (``[N]`` for one output).
            f0: ``[N, O]`` outputs at initialisation, subtracted from ``Y``; ``None`` for 0.

        Returns:
            ``self``, fitted.

        Raises:
            ValueError: shapes that disagree; NaN or Inf.
            StoreError: a store that is not complete.
        """
        self._lower = self._gram = self.rhs = self._coef = None
        self.N = 0
        if not isinstance(Phi, FeatureStore):
            return self.partial_fit(Phi, Y, f0)
        if len(Y) != len(Phi):
            raise ValueError(f"{Phi.path} holds features of {len(Phi)} samples, and Y has {len(Y)} rows")
        for rows, block in Phi.blocks():
            self.partial_fit(block, Y[rows], None if f0 is None else f0[rows])
        return self

    def partial_fit(self, Phi, Y, f0=None) -> FeatureRidge:
        """Add a chunk of rows to the Gram ``ΦᵀΦ`` and ``Φᵀ(Y − f0)``; the solve happens on first use.

        Raises:
            ValueError: shapes that disagree with each other or with earlier chunks.
        """
        P, O_phi = _rows(Phi, "Phi")
        Y = _numpy(Y, "Y")
        squeeze = Y.ndim == 1
        Y = Y[:, None] if squeeze else Y
        if f0 is not None:
            Y = Y - _numpy(f0, "f0").reshape(Y.shape)
        N = Y.shape[0]
        if P.shape[0] != N * O_phi or (O_phi > 1 and Y.shape[1] != O_phi):
            raise ValueError(
                f"features of {P.shape[0] // O_phi} samples (O = {O_phi}) and targets of shape {list(Y.shape)} "
                "do not match"
            )
        R = Y.reshape(-1, 1) if O_phi > 1 else Y
        if self._lower is None or self.rhs is None:
            self._lower = np.zeros((P.shape[1], P.shape[1]))
            self.rhs = np.zeros((P.shape[1], R.shape[1]))
            self.O, self.squeeze = O_phi, squeeze
        elif self._lower.shape[0] != P.shape[1] or self.O != O_phi or self.rhs.shape[1] != R.shape[1]:
            raise ValueError("this chunk's features or targets differ in shape from the earlier chunks")
        self._lower += _lower_gram(P.contiguous())  # cast while adding: no float64 copy of the chunk's triangle
        self.rhs += (P.T @ torch.from_numpy(R).to(P)).double().cpu().numpy()
        self.N += N
        self._gram = self._coef = None
        return self

    @property
    def mean_diagonal(self) -> float:
        """The mean of ``diag K̂ = diag Φ Φᵀ`` over the rows fitted so far (``N·O`` of them for eNTK features),
        ``tr(ΦᵀΦ)/rows``: the scale to set ``λ`` against, e.g. ``ridge.ridge = 1e-3 * ridge.mean_diagonal``.

        Raises:
            ValueError: before any fit.
        """
        return float(np.trace(self._fitted())) / (self.N * self.O)

    def _fitted(self) -> np.ndarray:
        """The accumulated lower triangle of ``ΦᵀΦ``.

        Raises:
            ValueError: before any fit.
        """
        if self._lower is None:
            raise ValueError("FeatureRidge has seen no data; call fit() or partial_fit() first")
        return self._lower

    @property
    def gram(self) -> np.ndarray | None:
        """``ΦᵀΦ`` of the rows fitted so far, ``[k, k]`` float64; ``None`` before any."""
        if self._gram is None and self._lower is not None:
            lower = torch.from_numpy(self._lower)
            self._gram = (lower + lower.T - torch.diag(lower.diagonal())).numpy()
        return self._gram

    @property
    def coef(self) -> np.ndarray:
        """``W``, ``[k, O]`` (``[k, 1]`` for eNTK features).

        Raises:
            ValueError: before any fit.
            IllConditionedKernelError: a singular system with ``on_singular="raise"``.
        """
        self._fitted()
        if self._coef is None:
            self._coef = self._solve(self.ridge)
        return self._coef

    def _solve(self, ridge: float) -> np.ndarray:
        assert self.rhs is not None
        # The lower triangle of ΦᵀΦ + λI, which is all that Cholesky and eigh read below.
        A = self._fitted().copy()
        A[np.diag_indices_from(A)] += ridge
        rhs: np.ndarray = self.rhs
        try:
            L = cho_factor(A, lower=True)
            # A Cholesky factor exists for a numerically singular matrix too; pivots that small mean that
            # W would be dominated by rounding.
            if np.diag(L[0]).min() ** 2 > A.shape[0] * np.finfo(float).eps * np.abs(np.diag(A)).max():
                return cho_solve(L, rhs)
        except np.linalg.LinAlgError:
            pass
        message = (
            f"ΦᵀΦ + λI (k = {A.shape[0]}, λ = {ridge:g}) is singular or ill-conditioned; using the "
            "minimum-norm solution. Add ridge > 0 for a well-posed problem"
        )
        if self.on_singular is OnSingular.RAISE:
            raise IllConditionedKernelError(message)
        if self.on_singular is OnSingular.WARN:
            warnings.warn(message, IllConditionedKernelWarning, stacklevel=3)
        lam, U = np.linalg.eigh(A, UPLO="L")
        keep = lam > A.shape[0] * np.finfo(float).eps * max(lam.max(), 0.0)
        return U[:, keep] @ ((U[:, keep].T @ rhs) / lam[keep, None])

    def predict(self, Phi, f0=None) -> np.ndarray:
        """``f0(x) + Φ(x) W``: ``[M, O]`` float64 (``[M]`` if ``Y`` was ``[N]``).

        Args:
            Phi: ``[M, k]`` or ``[M, O, k]`` features of new inputs from the same map, or a feature store of
                them (read a block at a time).
            f0: ``[M, O]`` outputs at initialisation; ``None`` for 0.
        """
        if isinstance(Phi, FeatureStore):
            parts = [self.predict(block, None if f0 is None else f0[rows]) for rows, block in Phi.blocks()]
            return np.concatenate(parts)
        P, O_phi = _rows(Phi, "Phi")
        W = self.coef
        if P.shape[1] != W.shape[0] or O_phi != self.O:
            raise ValueError(
                f"features of shape {list(np.shape(Phi))} do not come from the map the model was fitted on"
            )
        F = P.double().cpu().numpy() @ W
        F = F.reshape(-1, O_phi) if O_phi > 1 else F
        if f0 is not None:
            F = F + _numpy(f0, "f0").reshape(F.shape)
        return F[:, 0] if self.squeeze else F

    def predict_path(self, Phi, ridges, f0=None) -> np.ndarray:
        """Predictions for several ridges from the one accumulated Gram: what ``FeatureRidge(λ)`` fitted on the
        same rows would predict, for each ``λ`` of ``ridges`` (e.g. to choose ``λ`` on held-out rows, which
        :meth:`partial_fit` can add to the fit afterwards). Cost: a ``k × k`` Cholesky factorisation
        (``k³/3``) and ``M·k·O`` per ridge.

        Args:
            Phi: ``[M, k]`` or ``[M, O, k]`` features of the inputs to predict (not a store).
            ridges: the ``λ ≥ 0`` to try.
            f0: ``[M, O]`` outputs at initialisation; ``None`` for 0.

        Returns:
            ``[len(ridges), M, O]`` float64 (``[len(ridges), M]`` if ``Y`` was ``[N]``).

        Raises:
            ValueError: before any fit, a negative ridge, or features of another map.
            IllConditionedKernelError: a singular system with ``on_singular="raise"``.
        """
        lower = self._fitted()
        lams = np.asarray(ridges, dtype=np.float64).reshape(-1)
        if (lams < 0).any():
            raise ValueError(f"ridges must be non-negative; got {lams.tolist()}")
        P, O_phi = _rows(Phi, "Phi")
        if P.shape[1] != lower.shape[0] or O_phi != self.O:
            raise ValueError(
                f"features of shape {list(np.shape(Phi))} do not come from the map the model was fitted on"
            )
        P64 = P.double().cpu().numpy()
        out = []
        for lam in lams:
            F = P64 @ self._solve(float(lam))
            F = F.reshape(-1, O_phi) if O_phi > 1 else F
            if f0 is not None:
                F = F + _numpy(f0, "f0").reshape(F.shape)
            out.append(F[:, 0] if self.squeeze else F)
        return np.stack(out)


def feature_regression(
    Phi_train,
    Phi_test,
    Y_train,
    *,
    f0_train=None,
    f0_test=None,
    ridge: float = 0.0,
    on_singular: OnSingular | str = "warn",
) -> np.ndarray:
    """Predictions of kernel ridge regression with ``K̂ = Φ Φᵀ``, solved in ``k`` dimensions
    (:class:`FeatureRidge`); the same conventions as :func:`pntk.analysis.kernel_regression`.

    Args:
        Phi_train: ``[N, k]`` or ``[N, O, k]`` features of the training inputs.
        Phi_test: ``[M, k]`` or ``[M, O, k]`` features of the test inputs, from the same map (same seed).
        Y_train: ``[N, O]`` targets, or ``[N]``.
        f0_train, f0_test: network outputs at initialisation; ``None`` for 0.
        ridge: ``λ ≥ 0``.
        on_singular: as for :class:`FeatureRidge`.

    Returns:
        ``[M, O]`` float64 predictions (``[M]`` for ``[N]`` targets).

    Example:
        >>> import torch
        >>> Phi = torch.eye(4, dtype=torch.float64)
        >>> feature_regression(Phi, Phi[:2], torch.tensor([1.0, 2.0, 3.0, 4.0]), ridge=1.0)
        array([0.5, 1. ])
    """
    model = FeatureRidge(ridge, on_singular=on_singular).fit(Phi_train, Y_train, f0_train)
    return model.predict(Phi_test, f0_test)
