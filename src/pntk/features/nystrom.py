"""Nyström features of a network's NTK from landmark samples and exact kernel columns."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ..choices import parse_enum
from ..kernels.api import kernel
from ..kernels.inputs import InputLike, Inputs
from ..kernels.kinds import Kind
from ..kernels.outputs import OutputLike
from ..kernels.selection import ParamsLike
from .projection import seed_for

# NOTE: [Nyström's cut-off]
# The usual numerical-rank rule, ``m·ε·λ_max`` (NumPy's matrix_rank), is far too strict here: a network's kernel
# has one eigenvalue far above the rest (the mean mode), so in float32 with ``m = 4096`` landmarks it kept 257
# of 4,096 directions of an MLP's pNTK on MNIST-1D, losing 11.5% of the trace, and ridge regression on those
# features reached 0.478 test accuracy where all 4,096 reach 0.684 (N = 20,000). Float32 columns cut at
# ``10⁻⁷·λ_max`` (about ``ε``) gave the accuracy of float64 columns (to 0.0006), so the directions between the two
# cut-offs hold signal, not rounding noise.


class Nystrom:
    r"""The Nyström feature map of ``m`` landmarks ``L``: ``Φ(x) = K(x, L)\, U Λ^{-1/2}``.

    With ``K(L, L) = U Λ Uᵀ`` (eigenvalues below ``rtol · λ_max`` dropped), ``Φ(x) Φ(x')ᵀ =
    K(x, L) K(L, L)⁺ K(L, x')``: the kernel projected onto the span of the landmarks' features. It is exact on
    the landmarks and wherever ``J(x)`` lies in their span, and otherwise below ``K`` (``K − Φ Φᵀ ⪰ 0``):
    biased, unlike the random projections, but deterministic for given landmarks, and for a spectrum that
    decays fast far more accurate at small ``k``. With landmarks drawn uniformly its expected error
    ``‖K − Φ Φᵀ‖`` is within a factor of the best rank-``k'`` error for ``m`` of order ``k' log k'`` times the
    coherence of ``K`` (Gittens & Mahoney, 2016).

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
