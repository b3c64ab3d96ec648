"""Random projections of per-sample gradients, generated from a seed and a name, never from the data.

A sketch is ``Φ(x) = J(x) R / √k`` for a random ``R ∈ R^{P×k}`` with ``E[R Rᵀ] = k I``, so that
``E[Φ(x) Φ(x')ᵀ] = J(x) J(x')ᵀ``. ``R`` is never held whole: it is stacked from one block per layer,

- :class:`KroneckerProjection` for a layer whose gradient factors as ``Σ_t D_tᵀ A_t`` (dense layers,
  convolutions, embeddings): ``b`` independent blocks ``R_out ⊗ R_in`` with ``R_out ∈ R^{m×c_out}``,
  ``R_in ∈ R^{n×c_in}``, so that a block's features ``R_outᵀ (Σ_t D_tᵀ A_t) R_in = Σ_t (D_t R_out)ᵀ (A_t R_in)``
  cost ``T(n·c_in + m·c_out + c_in·c_out)`` per sample and never form the gradient;
- :class:`DenseProjection` for every other parameter: a dense ``R`` whose rows are generated in chunks of
  :data:`CHUNK_ROWS`, each from the seed, the parameter's name and the chunk's index.

Every random matrix is a function of ``(seed, name, shape, distribution, dtype, device type)`` alone, so a
sample's features do not depend on the batch, the chunking or the process that computes them.

# NOTE: [Variance of a sketch]
# For one block of a Kronecker projection and a dense layer (``T = 1``, gradient ``G = d aᵀ``), the block's
# estimate of ``⟨G, G'⟩`` is ``U·V`` with ``U = (R_outᵀ d)·(R_outᵀ d')/c_out`` and
# ``V = (R_inᵀ a)·(R_inᵀ a')/c_in`` independent and unbiased for ``d·d'`` and ``a·a'``. For Gaussian entries
# ``Var U = (|d|²|d'|² + (d·d')²)/c_out`` (Rademacher entries subtract ``2 Σ_i d_i² d_i'²``; orthogonal ones
# less still), likewise ``V``, and ``Var(UV) = Var U·Var V + Var U·(a·a')² + Var V·(d·d')²``. ``k = b·c_out·c_in``
# features average ``b`` independent blocks: the variance is that of one block over ``b``, so the error falls
# as ``k^{-1/2}`` at a fixed block shape. On the diagonal (``x = x'``) a block's relative variance is
# ``(1 + 2/c_out)(1 + 2/c_in) − 1``, about ``4/c`` for ``c_out = c_in = c``, so ``k`` features have a relative
# variance of about ``4c/k``, against ``2/k`` for a dense Gaussian ``R`` (``Var = (K(x,x) K(x',x') + K(x,x')²)/k``):
# the default 8 × 8 blocks have 16 times the variance (4 times the standard deviation) of a dense projection at
# equal ``k``, for ``2k(n + m)/8`` multiply-adds per sample of a dense layer instead of ``2k·n·m``, and
# ``k(n + m)/8`` numbers of state instead of ``k·n·m``. That is the worst case: a gradient of higher rank (a
# sum over ``T > 1`` positions) has relatively less, and layers project independently, so their variances add
# while their kernels add too (the cross-layer terms have zero mean).
"""

from __future__ import annotations

import enum
import hashlib
import math
from dataclasses import dataclass

import torch
from torch import Tensor

#: Rows of a dense projection generated at once (and keyed by their index): 16 MiB of float32 at ``k = 4096``.
CHUNK_ROWS = 1024

#: The most numbers a jointly orthogonal dense projection may hold (it cannot be generated chunk by chunk).
ORTHOGONAL_NUMBERS = 2**26


class Distribution(str, enum.Enum):
    """The entries of a random projection ``R``; every choice has ``E[R Rᵀ] = k I``.

    - ``GAUSSIAN``: independent standard normal entries.
    - ``RADEMACHER``: independent ±1 entries; a little less variance than Gaussian (no fourth-moment excess).
    - ``ORTHOGONAL``: Haar-random orthogonal columns (or rows, when there are more columns than rows) scaled
      so that ``E[R Rᵀ] = k I``; less variance again, and ``R Rᵀ = k I`` exactly once ``k`` reaches the number
      of rows. A dense orthogonal projection is generated whole, so only up to :data:`ORTHOGONAL_NUMBERS`.
    """

    GAUSSIAN = "gaussian"
    RADEMACHER = "rademacher"
    ORTHOGONAL = "orthogonal"


def seed_for(seed: int, key: str) -> int:
    """A 63-bit seed from the user's ``seed`` and a ``key`` (a parameter or layer name), stable across processes
    and Python versions (unlike ``hash``)."""
    digest = hashlib.blake2b(f"{seed}/{key}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") >> 1


def random_matrix(
    seed: int,
    key: str,
    shape: tuple[int, ...],
    distribution: Distribution,
    dtype: torch.dtype,
    device: torch.device,
) -> Tensor:
    """A random ``[*batch, rows, cols]`` matrix (or batch of them) with ``E[R Rᵀ] = cols·I`` for each.

    Drawn on ``device`` by a generator seeded from ``(seed, key)``: the same arguments give the same matrix on
    the same device type.
    """
    generator = torch.Generator(device=device).manual_seed(seed_for(seed, key))
    if distribution is Distribution.RADEMACHER:
        bits = torch.randint(0, 2, shape, generator=generator, device=device, dtype=torch.int8)
        return bits.to(dtype).mul_(2).sub_(1)
    R = torch.randn(shape, generator=generator, device=device, dtype=dtype)
    if distribution is Distribution.GAUSSIAN:
        return R
    rows, cols = shape[-2:]
    # Householder QR of a Gaussian matrix is left-rotation invariant, so E[Q Qᵀ] is a multiple of I; the sign
    # fix makes Q exactly Haar-distributed.
    tall = rows >= cols
    Q, Rr = torch.linalg.qr(R if tall else R.mT)
    Q = Q * torch.sign(torch.diagonal(Rr, dim1=-2, dim2=-1)).unsqueeze(-2)
    return Q * math.sqrt(rows) if tall else Q.mT * math.sqrt(cols)


@dataclass(frozen=True)
class KroneckerProjection:
    """The projection of one factored layer: ``b`` blocks ``R_out ⊗ R_in`` per group ``g``.

    The layer's per-sample gradient in group ``g`` and output row ``r`` is ``G = Σ_t D_tᵀ Ã_t ∈ R^{M×n'}``
    with ``Ã_t = [ws·A_t, bs]`` (the bias as a last input column: ``n' = n + 1``; ``n`` without a bias, ``1``
    when only the bias is differentiated). Feature ``β·c_out·c_in + i·c_in + j`` is
    ``R_out[g, :, β·c_out + i]ᵀ G R_in[g, :, β·c_in + j]``, summed over groups.

    Attributes:
        name: the layer's name (its module path); the key of its random matrices.
        R_out: ``[G, M, b·c_out]``, block ``β`` in columns ``β·c_out …``.
        R_in: ``[G, n', b·c_in]``.
        blocks: ``b = k / (c_out·c_in)``.
        weight: whether the weight is differentiated (else only the bias: ``Ã_t = [bs]``).
        bias: whether the bias is differentiated.
        ws, bs: the layer's weight and bias scales.
        embedding: ``A`` holds token ids ``[1, B, T]`` (``-1`` for padding), ``Ã_t R_in`` is a row lookup.
    """

    name: str
    R_out: Tensor
    R_in: Tensor
    blocks: int
    weight: bool
    bias: bool
    ws: float
    bs: float
    embedding: bool = False

    @staticmethod
    def draw(
        seed: int,
        name: str,
        *,
        groups: int,
        M: int,
        n: int,
        k: int,
        block: tuple[int, int],
        weight: bool,
        bias: bool,
        ws: float,
        bs: float,
        distribution: Distribution,
        dtype: torch.dtype,
        device: torch.device,
        embedding: bool = False,
    ) -> KroneckerProjection:
        """Draw the blocks of a layer with ``groups`` groups of ``M × n`` weights (plus a bias column)."""
        c_out, c_in = block
        b = k // (c_out * c_in)
        n_in = (n if weight else 0) + (1 if bias else 0)
        R_out = random_matrix(seed, f"{name}/out", (groups, b, M, c_out), distribution, dtype, device)
        R_in = random_matrix(seed, f"{name}/in", (groups, b, n_in, c_in), distribution, dtype, device)
        return KroneckerProjection(
            name,
            R_out.permute(0, 2, 1, 3).reshape(groups, M, b * c_out),
            R_in.permute(0, 2, 1, 3).reshape(groups, n_in, b * c_in),
            b,
            weight,
            bias,
            ws,
            bs,
            embedding,
        )

    @property
    def numbers(self) -> int:
        """The numbers this projection holds."""
        return self.R_out.numel() + self.R_in.numel()

    def positions(self, D: Tensor) -> int:
        """``G·T``: the terms ``(g, t)`` that a sample's features sum, for cotangents ``D [G, B, r, T, M]``."""
        return D.shape[0] * D.shape[3]

    def factors(self, A: Tensor | None, D: Tensor, U: Tensor, V: Tensor) -> None:
        """Write the projected factors ``D_t R_out`` and ``Ã_t R_in`` of a chunk into ``U`` and ``V``.

        Args:
            A: the layer inputs ``[G, B, T, n]`` (token ids ``[1, B, T]`` for an embedding); unused without
                ``weight``.
            D: the output cotangents ``[G, B, r, T, M]``.
            U: ``[G·T, B, b, r, c_out]``, position-major, overwritten.
            V: ``[G·T, B, b, c_in]``, overwritten.

        Cost: ``B·G·T·(r·M·b·c_out + n·b·c_in)`` multiply-adds, ``b·c_out·c_in = k``.
        """
        G, B, r, T, M = D.shape
        if G == 1 and T == 1 and r == 1:  # straight into place
            torch.mm(D.reshape(B, M), self.R_out[0], out=U.view(B, -1))
        else:
            U.copy_(
                torch.bmm(D.reshape(G, B * r * T, M), self.R_out)
                .view(G, B, r, T, *U.shape[2:3], -1)
                .permute(0, 3, 1, 4, 2, 5)
                .reshape(U.shape)
            )
        V.copy_(self._project_inputs(A, G, B, T).view(G, B, T, -1).transpose(1, 2).reshape(V.shape))

    def _project_inputs(self, A: Tensor | None, G: int, B: int, T: int) -> Tensor:
        """``Ã_t R_in`` ``[G, B, T, b·c_in]``."""
        R = self.R_in
        bias = (self.bs * R[:, -1:]) if self.bias else None  # [G, 1, b·c_in]
        if not self.weight:
            assert bias is not None
            return bias.view(G, 1, 1, -1).expand(G, B, T, -1)
        if A is None:
            raise ValueError(f"layer {self.name!r} projects its weight, so its inputs A are needed")
        R_w = R[:, :-1] if self.bias else R
        if self.embedding:
            ids = A.reshape(B, T)
            V = (R_w[0][ids.clamp(min=0)] * (ids >= 0).unsqueeze(-1)).unsqueeze(0)
            return V if bias is None else V + bias.unsqueeze(1)
        A = A.reshape(G, B * T, A.shape[-1])
        if bias is None:
            V = torch.bmm(A, R_w)
            return (V.mul_(self.ws) if self.ws != 1 else V).view(G, B, T, -1)
        return torch.baddbmm(bias, A, R_w, alpha=self.ws).view(G, B, T, -1)


def contract(U: Tensor, V: Tensor, out: Tensor, alpha: float) -> None:
    """``out = alpha · Σ_ℓ U_ℓ ⊗ V_ℓ`` over the positions ``ℓ`` of every layer: all layers' Kronecker features in one
    batched matmul.

    Args:
        U: ``[L, B, b, r, c_out]``, the projected cotangents of all positions of all layers.
        V: ``[L, B, b, c_in]``, the projected inputs.
        out: ``[B, r, k]``, overwritten; feature ``β·c_out·c_in + i·c_in + j``.
    """
    L, B, b, r, c_out = U.shape
    c_in = V.shape[-1]
    # Batches (sample, block) of [r·c_out, L] @ [L, c_in]; both operands are strided views that BLAS reads as
    # they are (a copy to contiguous batches costs as much as the product).
    U_ = U.view(L, B * b, r * c_out).permute(1, 2, 0)
    V_ = V.view(L, B * b, c_in).permute(1, 0, 2)
    if r == 1:
        target = out.view(B * b, c_out, c_in)
        torch.baddbmm(target, U_, V_, beta=0, alpha=alpha, out=target)
        return
    W = torch.bmm(U_, V_).view(B, b, r, c_out, c_in)
    out.copy_(W.transpose(1, 2).reshape(B, r, -1)).mul_(alpha)


@dataclass(frozen=True)
class DenseProjection:
    """Dense rows of ``R`` for named parameters, generated chunk by chunk (or whole, if orthogonal).

    Parameter ``name`` with ``p`` numbers per sample and row owns ``p`` rows of ``R``; chunk ``c`` of them,
    rows ``c·CHUNK_ROWS …``, is drawn from ``(seed, "name/c")``. An orthogonal projection is one matrix over
    the rows of all ``sizes`` together, in their order.
    """

    seed: int
    k: int
    sizes: dict[str, int]
    distribution: Distribution
    dtype: torch.dtype
    device: torch.device
    joint: Tensor | None = None

    @staticmethod
    def draw(
        seed: int,
        k: int,
        sizes: dict[str, int],
        distribution: Distribution,
        dtype: torch.dtype,
        device: torch.device,
    ) -> DenseProjection:
        """The projection of parameters of ``sizes`` rows each.

        Raises:
            ValueError: an orthogonal projection of more than :data:`ORTHOGONAL_NUMBERS` numbers.
        """
        joint = None
        if distribution is Distribution.ORTHOGONAL and sizes:
            P = sum(sizes.values())
            if P * k > ORTHOGONAL_NUMBERS:
                raise ValueError(
                    f"an orthogonal dense projection of {P} parameters to k = {k} holds {P * k} numbers, more than "
                    f"{ORTHOGONAL_NUMBERS}; use distribution='gaussian' or 'rademacher', which are generated "
                    "chunk by chunk"
                )
            joint = random_matrix(seed, "dense/orthogonal", (P, k), distribution, dtype, device)
        return DenseProjection(seed, k, dict(sizes), distribution, dtype, device, joint)

    def rows(self, name: str) -> Tensor:
        """All rows of ``name``, ``[p, k]`` (for tests and small parameters; :meth:`project` streams them)."""
        return torch.cat([R for _, R in self._chunks(name)])

    def _chunks(self, name: str):
        p = self.sizes[name]
        if self.joint is not None:
            start = 0
            for other, size in self.sizes.items():
                if other == name:
                    yield slice(0, p), self.joint[start : start + p]
                    return
                start += size
        for c, start in enumerate(range(0, p, CHUNK_ROWS)):
            rows = slice(start, min(start + CHUNK_ROWS, p))
            shape = (rows.stop - rows.start, self.k)
            yield rows, random_matrix(self.seed, f"{name}/{c}", shape, self.distribution, self.dtype, self.device)

    def project(self, name: str, J: Tensor, out: Tensor, alpha: float) -> None:
        """``out += alpha · J R_name`` for per-sample gradients ``J`` ``[B, r, p]`` of parameter ``name``.

        Args:
            out: ``[B, r, k]``, accumulated into.

        Cost: ``B·r·p·k`` multiply-adds and ``p·k`` random numbers drawn.
        """
        B, r, p = J.shape
        if p != self.sizes[name]:
            raise RuntimeError(f"parameter {name!r} has {p} gradient entries per row, {self.sizes[name]} expected")
        flat = out.view(B * r, self.k)
        J = J.reshape(B * r, p)
        for rows, R in self._chunks(name):
            flat.addmm_(J[:, rows], R, alpha=alpha)
