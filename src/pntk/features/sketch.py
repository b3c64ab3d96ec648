"""Random features of a network's NTK: ``Φ = J R / √k`` with ``E[Φ Φᵀ] = K``, from per-layer factors.

# NOTE: [How k is shared among layers]
# Every layer projects into all ``k`` columns and the layers' features are summed: ``R`` is stacked from one
# independent block per layer, ``R = [R_1; …; R_L]``, exactly as a dense ``P × k`` projection is. So
# ``Φ Φᵀ/k`` estimates ``Σ_l K_l = K`` with each layer's estimate made from all ``k`` features: the variances
# add, ``Σ_l Var_l / k``, where splitting the columns among layers (``k_l`` each, concatenated) would give
# ``Σ_l Var_l / k_l`` — larger for every split — and would need a rule for the split that does not depend on
# the data (a split by parameter count starves a small last layer that carries much of the pNTK). The price
# is arithmetic: each layer does ``k`` columns of work, which the Kronecker blocks make cheap. The map is a
# function of the model's structure, ``k``, the block shape, the distribution, the dtype and the seed only,
# so train and test inputs sketched with the same seed share it.
"""

from __future__ import annotations

import enum
import math
import sys
from dataclasses import dataclass

import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from ..choices import parse_enum
from ..errors import StructureChangedError
from ..kernels.engine import outputs_per_sample
from ..kernels.inputs import InputLike, Inputs
from ..kernels.jacobian import JacobianEngine
from ..kernels.kinds import Kind
from ..kernels.model import FunctionalModel, functional_model
from ..kernels.outputs import OutputLike
from ..kernels.selection import ParamsLike
from ..kernels.structured.capture import capture, layer_captures
from ..kernels.structured.plan import Layer, gradient_numel, plan, unused_params
from ..kernels.structured.rules import ConvRule, EmbeddingRule, LinearRule, scales
from ..planning import pass_chunk
from .projection import DenseProjection, Distribution, KroneckerProjection, contract

#: The block shape ``(c_out, c_in)`` of a Kronecker projection: see the note [Variance of a sketch].
DEFAULT_BLOCK = (8, 8)


class Method(str, enum.Enum):
    """How :func:`features` projects per-sample gradients.

    - ``KRONECKER``: dense layers, convolutions and embeddings by Kronecker blocks on their factors (no
      per-sample gradient is formed; ``T(n·k/c_out + m·k/c_in + k)`` multiply-adds per sample and layer),
      every other parameter by a dense projection of its per-sample gradient. The default.
    - ``DENSE``: every parameter by a dense projection of its per-sample gradient (as TRAK does, but
      generated chunk by chunk): ``P·k`` multiply-adds per sample and ``P·k`` random numbers per chunk of
      samples; the least variance per feature of the random methods.
    - ``NYSTROM``: ``k`` landmark samples: ``Φ(x) = K(x, L) U Λ^{-1/2}`` from the eigendecomposition
      ``K(L, L) = U Λ Uᵀ`` (exact kernel columns). Deterministic given the landmarks and *biased*:
      ``Φ Φᵀ = K(·, L) K(L, L)⁺ K(L, ·) ⪯ K``, exact on the landmarks; its error is set by the spectrum's tail
      beyond the ``k``-th eigenvalue, so it wins for small ``k`` on fast-decaying spectra. The landmarks are
      drawn uniformly or by randomly pivoted Cholesky (``landmarks=``, :class:`~pntk.features.Landmarks`).
    """

    KRONECKER = "kronecker"
    DENSE = "dense"
    NYSTROM = "nystrom"


@dataclass(frozen=True)
class _Plan:
    """What a feature map holds for one sample shape: the model, its layers and their projections."""

    fm: FunctionalModel
    layers: list[Layer]
    kronecker: dict[nn.Module, KroneckerProjection]
    dense: DenseProjection
    fallback: FunctionalModel | None
    per_sample_bytes: int
    unused: list[str]  # parameters with zero gradients, checked on every chunk


class FeatureMap:
    """The random feature map ``x ↦ Φ(x) = J(x) R / √k`` of a network's NTK, fixed by its seed.

    Calling it on any inputs gives their features under the same ``R``: sketch training inputs, then test
    inputs, and ``Φ_test Φ_trainᵀ`` estimates ``K(x_test, X_train)`` without bias. See :func:`features`
    for the arguments. The map takes the model's parameters when it first sees inputs of a shape (a copy
    when ``dtype`` casts them): make a new map after changing the model.

    Example:
        >>> import torch, pntk
        >>> net = torch.nn.Sequential(torch.nn.Linear(4, 16), torch.nn.Tanh(), torch.nn.Linear(16, 3)).eval()
        >>> phi = pntk.features.FeatureMap(net, k=128, seed=0)
        >>> Phi_train, Phi_test = phi(torch.randn(10, 4)), phi(torch.randn(5, 4))
        >>> (Phi_test @ Phi_train.T).shape  # an unbiased estimate of K(x_test, X_train)
        torch.Size([5, 10])
        >>> pntk.features.FeatureMap(net, k=128, kind="entk")(torch.randn(5, 4)).shape
        torch.Size([5, 3, 128])
    """

    def __init__(
        self,
        model: nn.Module,
        *,
        k: int,
        kind: Kind | str = Kind.PNTK,
        method: Method | str = Method.KRONECKER,
        seed: int = 0,
        distribution: Distribution | str = Distribution.GAUSSIAN,
        block: tuple[int, int] = DEFAULT_BLOCK,
        params: ParamsLike = None,
        dtype: torch.dtype | None = None,
        output: OutputLike = None,
    ) -> None:
        self.kind = parse_enum(Kind, kind, "kind")
        self.method = parse_enum(Method, method, "method")
        if self.method is Method.NYSTROM:
            raise ValueError("FeatureMap is for random projections; use pntk.Nystrom for method='nystrom'")
        if not isinstance(k, int) or k < 1:
            raise ValueError(f"k must be a positive integer, got {k!r}")
        self.block = (int(block[0]), int(block[1]))
        if self.method is Method.KRONECKER and (min(self.block) < 1 or k % (self.block[0] * self.block[1])):
            raise ValueError(
                f"k = {k} is not a multiple of the Kronecker block {self.block[0]} × {self.block[1]}; use "
                f"k = {max(1, round(k / (self.block[0] * self.block[1]))) * self.block[0] * self.block[1]} or "
                "another block"
            )
        if not isinstance(seed, int):
            raise ValueError(f"seed must be an int, got {seed!r}")
        self.model, self.k, self.seed = model, k, seed
        self.distribution = parse_enum(Distribution, distribution, "distribution")
        self.params, self.dtype, self.output = params, dtype, output
        self._plans: dict[tuple, _Plan] = {}

    def __call__(
        self,
        x: InputLike | Inputs,
        *,
        batch_size: int | None = None,
        memory: int | str | None = None,
        progress: bool | None = None,
    ) -> Tensor:
        """``Φ(x)``: ``[N, k]`` for the pNTK and trace NTK, ``[N, O, k]`` for the eNTK.

        Each sample's row depends on that sample and the map only, never on ``batch_size`` or the process
        (up to the rounding of the network's own passes, which BLAS may sum in another order for another
        batch size; the same chunks give the same bits).

        Raises:
            StructureChangedError: a chunk of the model does not follow the plan of the Kronecker method's layers
                (its structure depends on its inputs); the message says to use ``method="dense"``.
        """
        try:
            return self._features(x, batch_size=batch_size, memory=memory, progress=progress)
        except StructureChangedError as error:
            raise error.advised(
                "use method='dense', which projects every layer's per-sample gradients and holds for any model"
            ) from error

    def _features(
        self, x: InputLike | Inputs, *, batch_size: int | None, memory: int | str | None, progress: bool | None
    ) -> Tensor:
        kind = self.kind
        X = x if isinstance(x, Inputs) else Inputs.from_user(x, "x")
        p = self._plan(X)
        X = p.fm.prepare_inputs(X, "x")
        N, r = len(X), outputs_per_sample(p.fm, kind) if kind is Kind.ENTK else 1
        batch_size = self.batch_size(X, memory=memory, batch_size=batch_size)
        Phi = torch.empty(N, r, self.k, dtype=p.fm.dtype, device=p.fm.device)
        starts = range(0, N, batch_size)
        if progress is None:
            progress = len(starts) > 1 and sys.stderr.isatty()
        for s in tqdm(starts, desc=f"{kind.value} features", unit="chunk", disable=not progress):
            rows = slice(s, min(s + batch_size, N))
            self._project(p, X[rows], kind, Phi[rows])
        return Phi if kind is Kind.ENTK else Phi[:, 0]

    def batch_size(
        self,
        x: InputLike | Inputs,
        *,
        n: int | None = None,
        memory: int | str | None = None,
        batch_size: int | None = None,
    ) -> int:
        """Samples per pass for inputs shaped like ``x`` (``[N, *input]``): ``batch_size`` when given, else the
        most whose work fits ``memory`` (:func:`pntk.planning.pass_chunk`), at most ``n`` (default ``N``).

        Raises:
            ValueError: ``batch_size`` is not a positive integer, or ``memory`` not a size.
        """
        X = x if isinstance(x, Inputs) else Inputs.from_user(x, "x")
        p = self._plan(X)
        return pass_chunk(p.fm, n or len(X), p.per_sample_bytes, memory=memory, batch_size=batch_size)

    def state_bytes(self, x: InputLike) -> int:
        """The bytes of projection state the map holds for inputs shaped like ``x`` (a dense projection's
        chunks are drawn as needed and not counted, except a jointly orthogonal one)."""
        p = self._plan(Inputs.from_user(x, "x"))
        itemsize = p.fm.dtype.itemsize
        joint = 0 if p.dense.joint is None else p.dense.joint.numel()
        return itemsize * (sum(proj.numbers for proj in p.kronecker.values()) + joint)

    def _plan(self, X: Inputs) -> _Plan:
        key = (X.keys, X.sample_shapes)
        if key not in self._plans:
            self._plans[key] = self._make_plan(X)
        return self._plans[key]

    def _make_plan(self, X: Inputs) -> _Plan:
        kind = self.kind
        fm = functional_model(self.model, X[:2], params=self.params, dtype=self.dtype, output=self.output)
        X = fm.prepare_inputs(X[:2], "x")
        O, R = fm.num_outputs, outputs_per_sample(fm, kind)
        rows_per_param = O if kind is Kind.TRACE else 1  # the trace projects the stacked Jacobian [O·P]
        if self.method is Method.KRONECKER:
            layers, fallback = plan(fm, X, kind)
            unused = unused_params(fm, X, kind)
        else:
            layers, fallback, unused = [], list(fm.params), []
        kronecker: dict[nn.Module, KroneckerProjection] = {}
        dense_sizes: dict[str, int] = {}
        per_sample = 0
        names = _layer_names(layers)
        for layer in layers:
            shape = layer.shape
            if isinstance(layer.rule, (LinearRule, ConvRule, EmbeddingRule)):
                ws, bs = scales(layer.module)
                name = names[layer.module]
                kronecker[layer.module] = KroneckerProjection.draw(
                    self.seed,
                    name,
                    groups=shape.G,
                    M=shape.m * rows_per_param,
                    n=shape.n,
                    k=self.k,
                    block=self.block,
                    weight=layer.weight is not None,
                    bias=layer.bias is not None,
                    ws=ws,
                    bs=bs,
                    distribution=self.distribution,
                    dtype=fm.dtype,
                    device=fm.device,
                    embedding=isinstance(layer.rule, EmbeddingRule),
                )
                b = self.k // (self.block[0] * self.block[1])
                per_sample += shape.G * shape.T * (shape.n + R * b * self.block[0] + b * self.block[1])
            else:
                for n in layer.names:
                    numel = gradient_numel(fm, layer, n)
                    dense_sizes[n] = numel * rows_per_param
                    per_sample += R * numel
            per_sample += shape.G * shape.T * shape.m * (3 + R)  # activations and cotangents of the passes
        for n in fallback:
            dense_sizes[n] = fm.params[n].numel() * rows_per_param
            per_sample += 2 * R * fm.params[n].numel()  # vmap's per-sample gradients and their reshape
        rest = None
        if fallback:
            rest = FunctionalModel(
                fm.module,
                {n: fm.params[n] for n in fallback},
                {**fm.constants, **{n: t for n, t in fm.params.items() if n not in fallback}},
                fm.num_outputs,
                fm.device,
                fm.dtype,
                fm.casts_inputs,
            )
        dense = DenseProjection.draw(self.seed, self.k, dense_sizes, self.distribution, fm.dtype, fm.device)
        per_sample += 2 * R * self.k  # the chunk's features and one layer's contribution
        return _Plan(fm, layers, kronecker, dense, rest, per_sample * fm.dtype.itemsize, unused)

    def _project(self, p: _Plan, x: Inputs, kind: Kind, out: Tensor) -> None:
        """``out = J(x) R / √k`` for a chunk of samples, ``out`` ``[B, r, k]``."""
        fm, B, O = p.fm, len(x), p.fm.num_outputs
        alpha, r = 1 / math.sqrt(self.k), out.shape[1]
        factored: list[tuple[KroneckerProjection, Tensor | None, Tensor]] = []
        dense: list[tuple[str, Tensor]] = []
        for layer, xs, dzs in layer_captures(p.layers, capture(fm, x, p.layers, kind, p.unused) if p.layers else []):
            D = layer.rule.cotangents(layer.module, dzs)  # [G, B, R, T, m]
            projection = p.kronecker.get(layer.module)
            if projection is not None:
                if kind is Kind.TRACE:  # rows (a, i) of the stacked gradient, each output's weight 1/√O
                    G, _, _, T, m = D.shape
                    D = D.transpose(2, 3).reshape(G, B, 1, T, O * m) / math.sqrt(O)
                A = layer.rule.inputs(layer.module, xs) if layer.weight is not None else None
                factored.append((projection, A, D))
                continue
            if layer.weight is None:
                parts = layer.rule.gradient(layer.module, None, D, weight=False, bias=True)
            else:
                parts = layer.rule.materialise(layer.module, xs, D, bias=layer.bias is not None)
            dense += zip(layer.names, parts)
        if factored:
            (c_out, c_in), b = self.block, self.k // (self.block[0] * self.block[1])
            L = sum(projection.positions(D) for projection, _, D in factored)
            U = out.new_empty(L, B, b, r, c_out)
            V = out.new_empty(L, B, b, c_in)
            start = 0
            for projection, A, D in factored:
                stop = start + projection.positions(D)
                projection.factors(A, D, U[start:stop], V[start:stop])
                start = stop
            del factored  # the layers' inputs and cotangents, before the contraction's memory is needed
            contract(U, V, out, alpha)
        else:
            out.zero_()
        if p.fallback is not None:
            dense += zip(p.fallback.params, JacobianEngine().prepare(p.fallback, x, kind))
        for name, J in dense:
            p.dense.project(name, _rows(J, kind), out, alpha)


def _rows(J: Tensor, kind: Kind) -> Tensor:
    """Per-sample gradients ``[B, R, p]`` as the rows a kind projects: the trace's ``O`` rows stacked into one
    ``[B, 1, O·p]`` with weight ``1/√O`` (``T = (1/O) Σ_a J_a J_a'ᵀ``)."""
    if kind is not Kind.TRACE:
        return J
    B, O, p = J.shape
    return J.reshape(B, 1, O * p) / math.sqrt(O)


def _module_name(layer: Layer) -> str:
    """The layer's module path, from its differentiated parameter's name (``"0.weight"`` → ``"0"``)."""
    name = layer.weight or layer.bias or ""
    return name.rpartition(".")[0] or "<root>"


def _layer_names(layers: list[Layer]) -> dict:
    """The name that seeds each layer's projection: its module path, or, where several layers share one (the
    input and hidden weights of a recurrent layer, ruled by operation), its parameter's name, so that no two
    layers draw the same projection (which would correlate their parts and bias ``Φ Φᵀ``)."""
    paths = [_module_name(layer) for layer in layers]
    return {
        layer.module: path if paths.count(path) == 1 else (layer.weight or layer.bias or path)
        for layer, path in zip(layers, paths)
    }


def features(
    model: nn.Module,
    x: InputLike,
    *,
    k: int,
    kind: Kind | str = Kind.PNTK,
    method: Method | str = Method.KRONECKER,
    seed: int = 0,
    distribution: Distribution | str = Distribution.GAUSSIAN,
    block: tuple[int, int] = DEFAULT_BLOCK,
    landmarks: InputLike | str | None = None,
    params: ParamsLike = None,
    dtype: torch.dtype | None = None,
    batch_size: int | None = None,
    memory: int | str | None = None,
    progress: bool | None = None,
    output: OutputLike = None,
) -> Tensor:
    """Random features ``Φ`` of a network's NTK with ``E[Φ Φᵀ] = K`` (unbiased), fixed by ``seed``.

    ``Φ(x) = J(x) R / √k`` with ``J`` the per-sample Jacobian of the kind (``∇g`` for the pNTK, the ``O``
    rows of ``J`` for the eNTK, the ``O·P`` stacked rows weighted ``1/√O`` for the trace NTK) and a random
    ``R`` with ``E[R Rᵀ] = k I`` (see :class:`Method`, :class:`~pntk.features.Distribution` and the notes
    [How k is shared among layers] and [Variance of a sketch]): ``E[Φ(x) Φ(x')ᵀ] = K(x, x')``, with an error
    that falls as ``k^{-1/2}``. ``R`` depends on the seed, the model's structure and ``k`` only, so a sample's
    row is the same in any batch or process, and test inputs sketched with the same seed share the map.

    Args:
        model: an ``nn.Module`` mapping ``[B, *input]`` to ``[B, O]`` (eval mode if it has BatchNorm/Dropout).
        x: ``[N, *input]``, or a tuple/dict of such tensors.
        k: the number of features (for ``"nystrom"``: of landmarks); for ``"kronecker"`` a multiple of
            ``block[0]·block[1]``.
        kind: ``"pntk"``, ``"trace"`` or ``"entk"``.
        method: ``"kronecker"`` (default), ``"dense"`` or ``"nystrom"``.
        seed: fixes ``R`` (or the landmarks).
        distribution: entries of ``R``: ``"gaussian"``, ``"rademacher"`` or ``"orthogonal"``.
        block: ``(c_out, c_in)`` of the Kronecker blocks.
        landmarks: for ``"nystrom"``: the landmark inputs, or how to choose ``k`` of the samples ``x`` by
            ``seed``: ``"uniform"`` (the default) or ``"rpcholesky"`` (randomly pivoted Cholesky; see
            :class:`~pntk.features.Landmarks` for what each costs and guarantees).
        params: parameters to differentiate: a dict by name, name patterns or a predicate, as for
            :func:`pntk.kernel`; default all trainable ones.
        dtype: compute in this dtype; default the model's.
        batch_size: samples per pass; default the most whose estimated memory fits ``memory``.
        memory: the budget for one chunk's work, e.g. ``"1GB"`` (default: :func:`pntk.planning.memory_budget`'s);
            ``Φ`` itself is extra.
        progress: a progress bar over chunks; default when there are several and stderr is a terminal.
        output: what of the model's output is ``f(x)``, as for :func:`pntk.kernel`.

    Returns:
        ``Φ``: ``[N, k]`` for ``"pntk"``/``"trace"``, ``[N, O, k]`` for ``"entk"`` (``E[Φ_a Φ'_bᵀ] = Θ_ab``);
        for ``"nystrom"`` ``[N, k']`` / ``[N, O, k']`` with ``k'`` the numerical rank of ``K(L, L)``.

    Raises:
        ValueError: bad ``k``, ``method``, ``kind``, ``distribution``, ``block`` or ``landmarks``; anything
            :func:`pntk.kernel` refuses (training-mode BatchNorm, NaN inputs, …).

    Cost (``"kronecker"``, dense layers): one forward and one backward pass (``O`` for the eNTK and trace) and
    ``2k(n/c_in + m/c_out)``-ish multiply-adds per sample and layer; projection state
    ``k(n + m)/c`` numbers per layer for ``c × c`` blocks.

    Example:
        >>> import torch, pntk
        >>> net = torch.nn.Sequential(torch.nn.Linear(4, 16), torch.nn.Tanh(), torch.nn.Linear(16, 3)).eval()
        >>> x = torch.randn(10, 4)
        >>> Phi = pntk.features(net, x, k=256, seed=0)
        >>> Phi.shape, torch.allclose(Phi, pntk.features(net, x, k=256, seed=0, batch_size=3), atol=1e-6)
        (torch.Size([10, 256]), True)
    """
    if parse_enum(Method, method, "method") is Method.NYSTROM:
        from .nystrom import Landmarks, Nystrom, rpcholesky_landmarks

        L: InputLike | Inputs
        if landmarks is None or isinstance(landmarks, str):  # Landmarks is a str too
            X = Inputs.from_user(x, "x")
            if parse_enum(Landmarks, landmarks or Landmarks.UNIFORM, "landmarks") is Landmarks.UNIFORM:
                L = Nystrom.choose_landmarks(X, k, seed)
            else:
                index = rpcholesky_landmarks(
                    model,
                    X,
                    k,
                    kind=kind,
                    seed=seed,
                    params=params,
                    dtype=dtype,
                    batch_size=batch_size,
                    memory=memory,
                    output=output,
                )
                L = X[index]
        else:
            L = landmarks
        nys = Nystrom(model, L, kind=kind, params=params, dtype=dtype, batch_size=batch_size, output=output)
        return nys(x, progress=progress)
    if landmarks is not None:
        raise ValueError("landmarks= applies to method='nystrom' only")
    fmap = FeatureMap(
        model,
        k=k,
        kind=kind,
        method=method,
        seed=seed,
        distribution=distribution,
        block=block,
        params=params,
        dtype=dtype,
        output=output,
    )
    return fmap(x, batch_size=batch_size, memory=memory, progress=progress)
