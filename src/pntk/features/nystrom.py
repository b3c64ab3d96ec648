"""Nyström features of a network's NTK from landmark samples and exact kernel columns."""

from __future__ import annotations

import enum

import torch
from torch import Tensor, nn

from ..choices import parse_enum
from ..kernels.api import kernel
from ..kernels.inputs import InputLike, Inputs
from ..kernels.kinds import Kind
from ..kernels.outputs import OutputLike
from ..kernels.selection import ParamsLike
from ..operators.kernel import operator
from ..solvers.rpcholesky import rpcholesky
from .projection import seed_for

# NOTE: [Nyström's cut-off]
# The usual numerical-rank rule, ``m·ε·λ_max`` (NumPy's matrix_rank), is far too strict here: a network's kernel
# has one eigenvalue far above the rest (the mean mode), so in float32 with ``m = 4096`` landmarks it kept 257
# of 4,096 directions of an MLP's pNTK on MNIST-1D, losing 11.5% of the trace, and ridge regression on those
# features reached 0.478 test accuracy where all 4,096 reach 0.684 (N = 20,000). Float32 columns cut at
# ``10⁻⁷·λ_max`` (about ``ε``) gave the accuracy of float64 columns (to 0.0006), so the directions between the two
# cut-offs hold signal, not rounding noise.


class Landmarks(str, enum.Enum):
    """How :func:`pntk.features` chooses ``k`` Nyström landmarks among the samples ``x`` (``method="nystrom"``).

    Whatever the landmarks, ``Φ Φᵀ = K(·, L) K(L, L)⁺ K(L, ·) ⪯ K``: biased low, exact on the landmarks, with an
    error ``K − Φ Φᵀ`` set by how much of ``K`` lies outside the landmarks' span. The choice only sets that span.

    - ``UNIFORM``: ``k`` distinct samples drawn uniformly by the seed. Free. Its expected error is within a
      factor of the best rank-``r`` one for ``k`` of order ``r log r`` times the coherence of ``K`` (Gittens &
      Mahoney 2016): it misses a few samples unlike the rest (large ``K(x, x)``, directions of their own).
    - ``RPCHOLESKY``: ``k`` samples drawn by randomly pivoted Cholesky of ``K(x, x)``
      (:func:`rpcholesky_landmarks`): each block of pivots with probability proportional to what the landmarks
      so far leave unexplained, ``diag(K − Φ Φᵀ)``. Its expected trace error ``E tr(K − Φ Φᵀ)`` is within
      ``1 + ε`` of the best rank-``r`` one for ``k ≈ r/ε + r log(1/(εη))``, ``η`` the trace fraction beyond the
      ``r``-th eigenvalue, whatever the coherence (Chen, Epperly, Tropp & Webber 2024). Its randomness is in
      the draw only: the features of given landmarks are deterministic, like uniform ones. Cost: ``k``
      columns of ``K(x, x)`` read from the structured engine's factors, in blocks of 32, ``O(N k²)`` flops and
      ``N·k`` numbers of memory (float32 for a float32 model), before the features themselves (another
      ``N·k`` kernel entries); for ``N`` too large for that memory, draw the landmarks from a subset with
      :func:`rpcholesky_landmarks` and pass them as ``landmarks=``.
    """

    UNIFORM = "uniform"
    RPCHOLESKY = "rpcholesky"


def rpcholesky_landmarks(
    model: nn.Module,
    x: InputLike | Inputs,
    m: int,
    *,
    kind: Kind | str = Kind.PNTK,
    seed: int = 0,
    params: ParamsLike = None,
    dtype: torch.dtype | None = None,
    batch_size: int | None = None,
    memory: int | str | None = None,
    output: OutputLike = None,
) -> Tensor:
    """The indices of ``m`` landmark samples of ``x`` drawn by randomly pivoted Cholesky of ``K(x, x)``.

    Pivots are drawn in blocks of 32, each with probability proportional to the diagonal of the residual
    ``K − K(·, S) K(S, S)⁺ K(S, ·)`` of the pivots ``S`` so far (:func:`pntk.solvers.rpcholesky.rpcholesky`),
    so samples the landmarks already explain are seldom drawn again and samples unlike the rest are drawn
    early. For the eNTK the pivots are drawn on the trace NTK ``(1/O) tr Θ``, the mean of the eNTK's diagonal
    blocks, whose residual diagonal measures what the landmarks leave of every output (``Θ ≈ K ⊗ I_O``).

    Args:
        model: the network.
        x: ``[N, *input]`` the candidate samples (tensor, tuple or dict).
        m: landmarks wanted, ``1 … N``.
        kind: ``"pntk"``, ``"trace"`` or ``"entk"``.
        seed: the seed of the draws.
        params, dtype, batch_size, memory, output: as for :func:`pntk.operator`.

    Returns:
        ``[m']`` sorted sample indices, ``m' = m`` unless ``K(x, x)`` has numerical rank below ``m`` (then the
        residual vanishes first and more landmarks would add nothing). The same for any ``batch_size`` and
        ``memory`` up to the rounding of the columns.

    Raises:
        ValueError: ``m`` not in ``1 … N``, or anything :func:`pntk.operator` refuses.

    Cost: ``m`` columns of ``K(x, x)`` in blocks of 32 (``N·m`` kernel entries from the structured engine's
    factors), ``O(N·m²)`` flops, ``N·m`` numbers of memory (float32 for a float32 model).

    Example:
        >>> import torch, pntk
        >>> net = torch.nn.Sequential(torch.nn.Linear(4, 16), torch.nn.Tanh(), torch.nn.Linear(16, 3)).eval()
        >>> x = torch.randn(40, 4)
        >>> index = pntk.features.rpcholesky_landmarks(net, x, 8, seed=0)
        >>> index.shape, bool((index.diff() > 0).all())
        (torch.Size([8]), True)
    """
    X = x if isinstance(x, Inputs) else Inputs.from_user(x, "x")
    N = len(X)
    if not isinstance(m, int) or not 1 <= m <= N:
        raise ValueError(f"the number of landmarks k must be between 1 and N = {N}, got {m!r}")
    kind = parse_enum(Kind, kind, "kind")
    op = operator(
        model,
        _user(X),
        kind=Kind.TRACE if kind is Kind.ENTK else kind,
        params=params,
        dtype=dtype,
        batch_size=batch_size,
        memory=memory,
        progress=False,
        output=output,
    )
    pivots = rpcholesky(op, m, seed=seed_for(seed, "nystrom/rpcholesky")).pivots.cpu()
    # A pivot drawn twice (possible only once the residual is at rounding level) is one landmark.
    first = torch.ones(len(pivots), dtype=torch.bool)
    seen: set[int] = set()
    for i, p in enumerate(pivots.tolist()):
        first[i] = p not in seen
        seen.add(p)
    return pivots[first][:m].sort().values


class Nystrom:
    r"""The Nyström feature map of ``m`` landmarks ``L``: ``Φ(x) = K(x, L)\, U Λ^{-1/2}``.

    With ``K(L, L) = U Λ Uᵀ`` (eigenvalues below ``rtol · λ_max`` dropped), ``Φ(x) Φ(x')ᵀ =
    K(x, L) K(L, L)⁺ K(L, x')``: the kernel projected onto the span of the landmarks' features. It is exact on
    the landmarks and wherever ``J(x)`` lies in their span, and otherwise below ``K`` (``K − Φ Φᵀ ⪰ 0``):
    biased, unlike the random projections, but deterministic for given landmarks, and for a spectrum that
    decays fast far more accurate at small ``k``. With landmarks drawn uniformly its expected error
    ``‖K − Φ Φᵀ‖`` is within a factor of the best rank-``k'`` error for ``m`` of order ``k' log k'`` times the
    coherence of ``K`` (Gittens & Mahoney, 2016); drawn by randomly pivoted Cholesky
    (:func:`rpcholesky_landmarks`), its expected trace error is near the best rank-``k'`` one whatever the
    coherence (see :class:`Landmarks`).

    For the eNTK, ``Θ(x, L)`` is taken as its ``[O, m·O]`` matrix per sample, giving ``[N, O, k']`` features
    with ``Φ_a(x) Φ_b(x')ᵀ = [Θ(x, L) Θ(L, L)⁺ Θ(L, x')]_{ab}``.

    Cost: ``K(L, L)`` once (``m²`` entries, ``(m·O)²`` for the eNTK) and its eigendecomposition, then
    ``N·m`` kernel entries per call.

    Args:
        model: the network.
        landmarks: ``[m, *input]`` landmark inputs (tensor, tuple or dict).
        kind: ``"pntk"``, ``"trace"`` or ``"entk"``.
        rtol: relative cut-off for the eigenvalues of ``K(L, L)``; default the machine epsilon of its dtype
            (below ``ε·λ_max`` an eigenvalue is rounding noise). See the note [Nyström's cut-off].
        params, dtype, batch_size, output: as for :func:`pntk.kernel`.

    Example:
        >>> import torch, pntk
        >>> net = torch.nn.Sequential(torch.nn.Linear(4, 16), torch.nn.Tanh(), torch.nn.Linear(16, 3)).eval()
        >>> x = torch.randn(12, 4, dtype=torch.float64)
        >>> nys = pntk.Nystrom(net, x, dtype=torch.float64)  # every sample a landmark: exact
        >>> Phi = nys(x)
        >>> torch.allclose(Phi @ Phi.T, pntk.pntk(net, x, dtype=torch.float64))
        True
    """

    def __init__(
        self,
        model: nn.Module,
        landmarks: InputLike | Inputs,
        *,
        kind: Kind | str = Kind.PNTK,
        rtol: float | None = None,
        params: ParamsLike = None,
        dtype: torch.dtype | None = None,
        batch_size: int | None = None,
        output: OutputLike = None,
    ) -> None:
        self.model, self.kind = model, parse_enum(Kind, kind, "kind")
        self.landmarks = landmarks
        self.params, self.dtype, self.batch_size, self.output = params, dtype, batch_size, output
        K_LL = self._kernel(landmarks, None)
        lam, U = torch.linalg.eigh(K_LL)
        if rtol is None:
            rtol = torch.finfo(lam.dtype).eps  # see the note [Nyström's cut-off]
        keep = lam > rtol * lam.max().clamp(min=0)
        if not bool(keep.any()):
            raise ValueError("the kernel of the landmarks is zero; choose other landmarks or check the model")
        #: ``U Λ^{-1/2}`` ``[m, k']`` (``[m·O, k']`` for the eNTK), largest eigenvalue first.
        self.whitening = (U[:, keep] / lam[keep].sqrt()).flip(-1)
        self.eigenvalues = lam[keep].flip(-1)

    @staticmethod
    def choose_landmarks(x: Inputs, m: int, seed: int) -> Inputs:
        """``m`` distinct samples of ``x`` drawn uniformly by ``seed``.

        Raises:
            ValueError: ``m`` not in ``1 … N``.
        """
        N = len(x)
        if not isinstance(m, int) or not 1 <= m <= N:
            raise ValueError(f"the number of landmarks k must be between 1 and N = {N}, got {m!r}")
        g = torch.Generator().manual_seed(seed_for(seed, "nystrom/landmarks"))
        index = torch.randperm(N, generator=g)[:m].sort().values
        return x[index.to(x.tensors[0].device)]

    def _kernel(self, x1: InputLike | Inputs, x2: InputLike | Inputs | None) -> Tensor:
        """``K(x1, x2)`` as a matrix: ``[N1, N2]``, or ``[N1·O, N2·O]`` for the eNTK."""
        K = self._columns(x1, x2, progress=False)
        if self.kind is Kind.ENTK:
            N1, N2, O, _ = K.shape
            K = K.permute(0, 2, 1, 3).reshape(N1 * O, N2 * O)
        return K

    def _columns(self, x1: InputLike | Inputs, x2: InputLike | Inputs | None, *, progress: bool | None) -> Tensor:
        """:func:`pntk.kernel` between ``x1`` and ``x2`` with this map's options."""
        return kernel(  # type: ignore[return-value]  # not by_layer: one tensor
            self.model,
            _user(x1),
            None if x2 is None else _user(x2),
            kind=self.kind,
            params=self.params,
            dtype=self.dtype,
            output=self.output,
            batch_size=self.batch_size,
            progress=progress,
        )

    def __call__(self, x: InputLike, *, progress: bool | None = None) -> Tensor:
        """``Φ(x)``: ``[N, k']``, or ``[N, O, k']`` for the eNTK."""
        K = self._columns(x, self.landmarks, progress=progress)
        if self.kind is Kind.ENTK:
            N, m, O, _ = K.shape
            return (K.permute(0, 2, 1, 3).reshape(N * O, m * O) @ self.whitening).view(N, O, -1)
        return K @ self.whitening


def _user(x: InputLike | Inputs) -> InputLike:
    """Inputs as :func:`pntk.kernel` takes them."""
    if not isinstance(x, Inputs):
        return x
    if x.keys is not None:
        return dict(zip(x.keys, x.tensors))
    return x.tensors[0] if len(x.tensors) == 1 else x.tensors
