"""Layer rules: how the gradient of one kind of layer factors into its inputs and output cotangents.

A ruled layer computes, for each sample, ``z_t = ws·W a_t + bs·b`` at ``T`` positions ``t`` (one for a dense
layer on ``[B, n]``, tokens for ``[B, T, n]``, output pixels for a convolution whose input is unfolded into
patches ``a_t``, per group ``g`` of a grouped convolution), or ``z = x̂ ⊙ γ + β`` (the affine part of a
normalisation layer, ``x̂`` its normalised input; PReLU's slope likewise multiplies ``min(x, 0)``). ``ws`` and
``bs`` are the ``weight_scale`` and ``bias_scale`` of an NTK-parametrised layer (1 otherwise). With the
cotangents ``D_t = ∂g/∂z_t`` of a scalar ``g`` (``R`` of them per sample: one for the pNTK, one per output
otherwise):

.. math::

    \\frac{∂g}{∂W_g} = ws \\sum_t D_{g,t}^⊤ A_{g,t}, \\qquad \\frac{∂g}{∂b} = bs \\sum_t D_t, \\qquad
    \\frac{∂g}{∂γ} = \\sum_t D_t ⊙ x̂_t, \\qquad \\frac{∂g}{∂β} = \\sum_t D_t.

A rule turns what a forward hook captured into the factors

- ``A``: the layer inputs ``[G, B, T, n]`` (token ids ``[1, B, T]`` for an embedding, ``φ(x)`` ``[1, B, T, C]``
  for an elementwise parameter),
- ``D``: the cotangents ``[G, B, R, T, m]``,

and from those into either the Gram ``ws² A Aᵀ' + bs²`` that the engine multiplies with ``D Dᵀ'`` (the
factored form) or the per-sample gradient, in parts ``[B, R, P_part]`` (the materialised form). A layer called several
times (weight sharing) has its calls concatenated along ``T``: its gradient sums over calls as over positions.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.modules.conv import _ConvNd


@dataclass(frozen=True)
class LayerShape:
    """Per-sample sizes of a ruled layer: ``T`` positions (over all calls), ``G`` groups, ``n`` and ``m``.

    ``n`` is the width of ``A`` per group (the vocabulary for an embedding, the channels ``C`` of ``x̂``
    for a normalisation layer) and ``m`` that of ``D``.
    """

    T: int
    G: int
    n: int
    m: int


def scales(module: nn.Module) -> tuple[float, float]:
    """``(ws, bs)``: the forward multipliers of the weight and the bias, ``1.0`` where not declared."""
    return float(getattr(module, "weight_scale", 1.0)), float(getattr(module, "bias_scale", 1.0))


def _declares_scales(module: nn.Module) -> bool:
    """An NTK-parametrised subclass: its forward is its parent's with ``weight·weight_scale``, ``bias·bias_scale``."""
    return hasattr(module, "weight_scale") or hasattr(module, "bias_scale")


def _cat(parts: list[Tensor], dim: int) -> Tensor:
    return parts[0] if len(parts) == 1 else torch.cat(parts, dim)


def _samples_first(t: Tensor) -> Tensor:
    """``[G, B, R, ...]`` → ``[B, R, G·...]``."""
    G, B, R = t.shape[:3]
    return t.reshape(G, B, R, -1).permute(1, 2, 0, 3).reshape(B, R, -1)


class Rule:
    """A kind of layer: ``z_t = ws·W a_t + bs·b`` with a dense Gram and a ``Dᵀ A`` gradient by default."""

    #: Whether the factored form exists (normalisation layers only have the materialised one).
    factorable = True

    #: Whether a call may take the same input for every sample (no sample axis, e.g. an embedding of
    #: positions ``arange(T)`` shared by all samples): its output is then shared too, and the plan checks that
    #: its per-sample cotangents can be found (see the note [Calls shared by all samples] in ``capture``).
    shared_inputs = False

    def applies(self, module: nn.Module) -> bool:
        """Whether this rule computes ``module`` exactly: its exact type, or an NTK-scaled subclass."""
        raise NotImplementedError(f"{type(self).__name__} must say which modules it applies to")

    def compatible(self, module: nn.Module, other: nn.Module) -> bool:
        """Whether ``other``, which holds the same parameters as ``module``, computes what ``module`` computes
        (its calls are then more positions of one layer): the same type and scales by default."""
        return type(other) is type(module) and scales(other) == scales(module)

    def shape(self, module: nn.Module, inputs: list[torch.Size], outputs: list[torch.Size]) -> LayerShape | None:
        """The sizes, from each call's per-sample input and output shapes; ``None`` for calls it cannot read."""
        raise NotImplementedError(f"{type(self).__name__} must give its layer's shape")

    def keep(self, module: nn.Module, x: Tensor) -> Tensor:
        """What a forward hook keeps of a call's input ``x`` (inside the call, where the module holds the
        kernel's tensors): ``x`` itself by default."""
        return x

    def inputs(self, module: nn.Module, xs: list[Tensor]) -> Tensor:
        """``A`` from what :meth:`keep` kept of each call's input ``[B, ...]``."""
        raise NotImplementedError(f"{type(self).__name__} must build the input factor")

    def cotangents(self, module: nn.Module, dzs: list[Tensor]) -> Tensor:
        """``D [G, B, R, T, m]`` from the cotangent ``[R, B, ...]`` of each call's output."""
        raise NotImplementedError(f"{type(self).__name__} must build the cotangent factor")

    def nominal_shape(self, module: nn.Module) -> LayerShape | None:
        """The sizes for one position per sample, where the module alone tells them; else ``None``."""
        return None

    def gram_width(self, shape: LayerShape) -> int:
        """Multiply-adds per entry of the Gram of ``A`` (and numbers of ``A`` per position)."""
        return shape.n + 1

    def gradient_width(self, shape: LayerShape) -> int:
        """Numbers per group and row ``m`` of the per-sample gradient: weight and bias."""
        return shape.n + 1

    def gram(self, module: nn.Module, A1: Tensor, A2: Tensor, bias: bool, dtype: torch.dtype) -> Tensor:
        """``ws² A1 A2ᵀ + bs²`` (``bs = 0`` without ``bias``), ``[G, B1·T, B2·T]``, from ``A [G, B, T, n]``."""
        ws, bs = scales(module)
        G = A1.shape[0]
        A1, A2 = A1.reshape(G, -1, A1.shape[-1]), A2.reshape(G, -1, A2.shape[-1])
        if bias:
            return torch.baddbmm(A1.new_tensor(bs * bs), A1, A2.mT, alpha=ws * ws)
        gram = torch.bmm(A1, A2.mT)
        return gram.mul_(ws * ws) if ws != 1 else gram

    def materialise(
        self, module: nn.Module, xs: list[Tensor], D: Tensor, bias: bool, out: list[Tensor] | None = None
    ) -> list[Tensor]:
        """:meth:`gradient` (weight and maybe bias) of a chunk of samples from what the hooks kept of its inputs
        ``[B, ...]`` per call."""
        return self.gradient(module, self.inputs(module, xs), D, weight=True, bias=bias, out=out)

    def gradient(
        self, module: nn.Module, A: Tensor | None, D: Tensor, weight: bool, bias: bool, out: list[Tensor] | None = None
    ) -> list[Tensor]:
        """The per-sample gradient in parts ``[B, R, P_part]``: ``ws Σ_t D_tᵀ A_t`` (with ``weight``) and
        ``bs Σ_t D_t`` (with ``bias``); kept apart, since only their inner products are needed.

        Args:
            A: ``[G, B, T, n]``; unused (may be ``None``) without ``weight``.
            D: ``[G, B, R, T, m]``.
            out: where to write the parts (rows of a larger gradient); new tensors if ``None``.
        """
        ws, bs = scales(module)
        G, B, R, T, m = D.shape
        parts = []
        if weight:
            assert A is not None, "the weight gradient needs the layer inputs A"
            n = A.shape[-1]
            dW = D.new_empty(B, R, G * m * n) if out is None else out[0]
            if G == 1:
                # One matmul per sample, straight into place: [R·m, T] @ [T, n]. D_tᵀ is a view of the output
                # cotangent [R, B, m, *S] when R = 1, and A may be a transposed view of the unfolded patches.
                torch.bmm(D[0].transpose(-1, -2).reshape(B, R * m, T), A[0], out=dW.view(B, R * m, n))
            else:
                dW.copy_(_samples_first(torch.einsum("gbrtm,gbtn->gbrmn", D, A)))
            parts.append(dW.mul_(ws) if ws != 1 else dW)
        if bias:
            db = D.sum(3)  # [G, B, R, m]
            parts.append(_samples_first(db.mul_(bs) if bs != 1 else db))
        return _deliver(parts, out)


def _deliver(parts: list[Tensor], out: list[Tensor] | None) -> list[Tensor]:
    """``parts``, copied into ``out`` when given (a part computed in place is left as it is)."""
    if out is None:
        return parts
    for o, p in zip(out, parts):
        if p is not o:
            o.copy_(p)
    return out[: len(parts)]


class LinearRule(Rule):
    """``nn.Linear`` on ``[B, *, n]``: the ``T = ∏ *`` leading positions of a sample share the weight."""

    def applies(self, module):
        return type(module) is nn.Linear or (isinstance(module, nn.Linear) and _declares_scales(module))

    def shape(self, module, inputs, outputs):
        n = module.in_features
        if any(len(s) == 0 or s[-1] != n for s in inputs):
            return None
        return LayerShape(T=sum(math.prod(s[:-1]) for s in inputs), G=1, n=n, m=module.out_features)

    def nominal_shape(self, module):
        return LayerShape(T=1, G=1, n=module.in_features, m=module.out_features)

    def inputs(self, module, xs):
        return _cat([x.reshape(1, x.shape[0], -1, x.shape[-1]) for x in xs], 2)

    def cotangents(self, module, dzs):
        return _trailing_features(dzs)


def _trailing_features(dzs: list[Tensor]) -> Tensor:
    """``D [1, B, R, T, m]`` from cotangents ``[R, B, *, m]`` whose leading axes ``*`` are the positions."""
    return _cat([dz.reshape(*dz.shape[:2], -1, dz.shape[-1]).transpose(0, 1).unsqueeze(0) for dz in dzs], 3)


class ConvRule(Rule):
    """``nn.Conv1d/2d/3d``: the input unfolded into patches, one position per output pixel, ``G`` groups.

    Any stride, dilation, groups, padding (numbers, ``"same"``, ``"valid"``) and padding mode.
    """

    def __init__(self, cls: type[nn.Module], dim: int) -> None:
        self.cls, self.dim = cls, dim

    def applies(self, module):
        return type(module) is self.cls or (isinstance(module, self.cls) and _declares_scales(module))

    def shape(self, module, inputs, outputs):
        if any(len(s) != self.dim + 1 for s in inputs):
            return None  # an unbatched call, [C, *spatial]
        G = module.groups
        return LayerShape(
            T=sum(math.prod(s[1:]) for s in outputs),
            G=G,
            n=module.in_channels // G * math.prod(module.kernel_size),
            m=module.out_channels // G,
        )

    def inputs(self, module, xs):
        return _cat([_unfold(module, x) for x in xs], 2)

    def materialise(self, module, xs, D, bias, out=None):
        if module.groups != 1 or len(xs) != 1 or D.shape[3] < GROUPED_FROM:
            return super().materialise(module, xs, D, bias, out)
        ws = scales(module)[0]
        dW = _conv_weight_gradient(module, xs[0], D, None if out is None else out[0])
        parts = [dW.mul_(ws) if ws != 1 else dW]
        return parts + (self.gradient(module, None, D, weight=False, bias=True, out=out and out[1:]) if bias else [])

    def cotangents(self, module, dzs):
        G = module.groups
        # [R, B, C_out, *S] → [G, B, R, T, m], output channel g·m + j.
        return _cat([dz.reshape(*dz.shape[:2], G, dz.shape[2] // G, -1).permute(2, 1, 0, 4, 3) for dz in dzs], 3)


#: Output positions from which a convolution's per-sample weight gradient is one grouped convolution backward
#: pass (samples as groups) rather than a matmul over unfolded patches: on large images the patches, ``∏k``
#: times the input, cost more to copy than the convolution saves (1.6× faster at 32×32, even at 16×16, slower
#: at 8×8, 64–128 channels on the reference CPU).
GROUPED_FROM = 1024


def _conv_weight_gradient(module: _ConvNd, x: Tensor, D: Tensor, out: Tensor | None) -> Tensor:
    """``Σ_t D_tᵀ A_t`` per sample and row, ``[B, R, C_out·C_in·∏k]``, of an ungrouped convolution by the
    weight-gradient pass of a convolution whose groups are the samples.

    Args:
        x: the layer's input ``[B, C_in, *S_in]``.
        D: ``[1, B, R, T, C_out]``, a view of the output cotangent ``[R, B, C_out, *S]``.
    """
    B, R, m = D.shape[1], D.shape[2], D.shape[4]
    d = x.dim() - 2
    if module.padding_mode == "zeros" and not isinstance(module.padding, str):
        padding = list(module.padding)  # the convolution pads, as the layer's forward does
    else:  # "same" (maybe asymmetric), "valid", or another padding mode: pad as the forward pass does
        padding = [0] * d
        x = F.pad(
            x,
            module._reversed_padding_repeated_twice,
            mode="constant" if module.padding_mode == "zeros" else module.padding_mode,
        )
    spatial = _output_size(x.shape[2:], padding, module)
    # Group b holds sample b's R·C_out output channels (row-major in r, then c) and its C_in input channels.
    dz = D[0].transpose(-1, -2).reshape(1, B * R * m, *spatial)
    weight_shape = (B * R * m, x.shape[1], *module.kernel_size)
    _, dW, _ = torch.ops.aten.convolution_backward(
        # The weight argument only gives the shape: no gradient with respect to the input is asked for.
        dz,
        x.reshape(1, -1, *x.shape[2:]),
        x.new_empty(weight_shape),
        None,
        list(module.stride),
        padding,
        list(module.dilation),
        False,
        [0] * d,
        B,
        [False, True, False],
    )
    dW = dW.view(B, R, -1)
    if out is None:
        return dW
    out.copy_(dW)
    return out


def _output_size(size: torch.Size, padding: list[int], module: _ConvNd) -> list[int]:
    """Output size of a convolution on an input of spatial ``size`` padded by ``padding`` on both sides."""
    return [
        (s + 2 * p - dil * (k - 1) - 1) // st + 1
        for s, p, k, st, dil in zip(size, padding, module.kernel_size, module.stride, module.dilation)
    ]


def _unfold(module: _ConvNd, x: Tensor) -> Tensor:
    """The patches of a convolution's input, ``[G, B, T, C_in/G · ∏k]``, ordered as the weight ``[C_in/G, *k]``.

    Padding is applied as the layer's forward applies it (``_reversed_padding_repeated_twice`` holds the
    left/right amounts for every padding option, the odd one of ``"same"`` on the right), then each spatial
    axis is cut into windows of extent ``dilation·(k-1)+1`` every ``stride``, subsampled by ``dilation``.
    """
    d = x.dim() - 2
    pad = module._reversed_padding_repeated_twice
    if any(pad):
        x = F.pad(x, pad, mode="constant" if module.padding_mode == "zeros" else module.padding_mode)
    for axis, (k, s, dil) in enumerate(zip(module.kernel_size, module.stride, module.dilation)):
        x = x.unfold(2 + axis, dil * (k - 1) + 1, s)
    x = x[(...,) + tuple(slice(None, None, dil) for dil in module.dilation)]  # [B, C, *S_out, *k]
    B, C = x.shape[:2]
    # Copied as [B, C, *k, *S_out], output pixels innermost (what F.unfold makes): reading the windows in
    # that order is twice as fast as making (C, *k) innermost, and [G, B, T, n] stays a view of it.
    patches = x.permute(0, 1, *range(2 + d, 2 + 2 * d), *range(2, 2 + d))
    G = module.groups
    return patches.reshape(B, G, C // G * math.prod(module.kernel_size), -1).permute(1, 0, 3, 2)


class EmbeddingRule(Rule):
    """``nn.Embedding``: ``A`` is one-hot, so its Gram is token equality and ``Dᵀ A`` a scatter.

    Without ``max_norm`` (which rewrites the weight in the forward pass) or ``scale_grad_by_freq`` (which
    rescales the gradient); padding tokens (id ``-1`` in ``A``) have no gradient. A call may take ids shared by
    all samples (positions, a relative-position bucket matrix): every sample then holds those ids, each with its
    own cotangents.
    """

    shared_inputs = True

    def applies(self, module):
        return type(module) is nn.Embedding and module.max_norm is None and not module.scale_grad_by_freq

    def compatible(self, module, other):
        return super().compatible(module, other) and other.padding_idx == module.padding_idx

    def shape(self, module, inputs, outputs):
        T = sum(math.prod(s) for s in inputs)
        return LayerShape(T=T, G=1, n=module.num_embeddings, m=module.embedding_dim)

    def nominal_shape(self, module):
        return LayerShape(T=1, G=1, n=module.num_embeddings, m=module.embedding_dim)

    def inputs(self, module, xs):
        ids = _cat([x.reshape(1, x.shape[0], -1) for x in xs], 2)
        return ids if module.padding_idx is None else ids.masked_fill(ids == module.padding_idx, -1)

    def cotangents(self, module, dzs):
        return _trailing_features(dzs)

    def gram_width(self, shape):
        return 1

    def gradient_width(self, shape):
        return shape.n

    def gram(self, module, A1, A2, bias, dtype):
        ids1, ids2 = A1.reshape(-1, 1), A2.reshape(1, -1)
        return ((ids1 == ids2) & (ids1 >= 0)).to(dtype).unsqueeze(0)

    def gradient(self, module, A, D, weight, bias, out=None):
        _, B, R, T, m = D.shape
        V = module.num_embeddings
        ids = A[0]  # [B, T]
        # Row (b, r, id) of the per-sample gradient [B, R, V, m] receives D[b, r, t] for every token t = id.
        rows = torch.arange(B * R, device=D.device).reshape(B, R, 1) * V + ids.clamp(min=0).unsqueeze(1)
        dW = D.new_zeros(B * R * V, m)
        dW.index_add_(0, rows.reshape(-1), (D[0] * (ids >= 0).unsqueeze(1).unsqueeze(-1)).reshape(-1, m))
        return _deliver([dW.reshape(B, R, V * m)], out)


class TiedLookupRule(EmbeddingRule):
    """An embedding whose weight ``W [V, d]`` a linear layer also uses as its weight (a language model's head
    tied to its input embedding, ``logits_t = W h_t + b``).

    The head adds ``Σ_t D_t h_tᵀ`` to the gradient of ``W``, with ``D_t ∈ R^V`` the cotangent of its logits.
    Where ``D_t`` is zero outside a few vocabulary rows ``S`` (the label words an output selects), that is
    ``Σ_{c∈S} e_c (Σ_t D_t[c] h_t)ᵀ``: one lookup of row ``c`` per ``c ∈ S`` with the cotangent
    ``Σ_t D_t[c] h_t``. So the head's part of the gradient is ``|S|`` more positions of the embedding, and the
    embedding's Gram of token equality and its scatter compute the whole gradient of ``W``. The last of a
    call's kept inputs holds the rows ``S`` ``[B, |S|]``; unlike the lookups' ids, a row equal to the
    ``padding_idx`` keeps its gradient (the head's use of that row is not a padding lookup).
    """

    def applies(self, module):
        return False  # never by type: the plan ties a head to an embedding

    def inputs(self, module, xs):
        ids = super().inputs(module, xs[:-1])
        return torch.cat([ids, xs[-1].reshape(1, ids.shape[1], -1)], 2)


#: The rule of an embedding tied to a linear head (see :class:`TiedLookupRule`).
TIED_LOOKUP_RULE = TiedLookupRule()


class ElementwiseRule(Rule):
    """A parameter ``γ`` that multiplies a feature ``φ(x)`` of the input elementwise, and maybe a bias ``β``.

    ``z = γ ⊙ φ(x) + β + (terms free of parameters)``, so ``∂g/∂γ = Σ_t D_t ⊙ φ(x)_t`` and
    ``∂g/∂β = Σ_t D_t`` over the positions ``t`` that share a parameter. The materialised gradient, ``C``
    numbers per sample and output, is always cheaper than a factored one and is the only form. ``φ(x)`` is
    what a hook keeps, computed inside the call where the module holds the kernel's tensors (BatchNorm's
    running statistics in the kernel's dtype).
    """

    factorable = False

    def __init__(self, cls: type[nn.Module]) -> None:
        self.cls = cls

    def applies(self, module):
        return type(module) is self.cls

    def channels(self, module: nn.Module) -> int:
        """``C``, the number of elements of ``γ``."""
        raise NotImplementedError(f"{type(self).__name__} must give its number of channels")

    def channels_last(self, module: nn.Module) -> bool:
        """Whether ``γ`` spans the trailing axes of the input (else axis 1, after the samples)."""
        raise NotImplementedError(f"{type(self).__name__} must give its channel layout")

    def shape(self, module, inputs, outputs):
        C = self.channels(module)
        if self.channels_last(module):
            trailing = tuple(getattr(module, "normalized_shape", ()))
            readable = all(tuple(s[len(s) - len(trailing) :]) == trailing for s in inputs)
        else:
            readable = all(len(s) > 0 and s[0] == C for s in inputs)
        return LayerShape(T=sum(math.prod(s) // C for s in inputs), G=1, n=C, m=C) if readable else None

    def _positions(self, module: nn.Module, t: Tensor, lead: int) -> Tensor:
        """``[*lead, ...]`` → ``[*lead, T, C]``, channels last."""
        if not self.channels_last(module):
            t = t.movedim(lead, -1)
        return t.reshape(*t.shape[:lead], -1, self.channels(module))

    def inputs(self, module, xs):
        return _cat([self._positions(module, x, 1).unsqueeze(0) for x in xs], 2)

    def cotangents(self, module, dzs):
        return _cat([self._positions(module, dz, 2).transpose(0, 1).unsqueeze(0) for dz in dzs], 3)

    def gradient(self, module, A, D, weight, bias, out=None):
        parts = []
        if weight:
            parts.append(torch.einsum("gbrtc,gbtc->brc", D, A))
        if bias:
            parts.append(D[0].sum(2))
        return _deliver(parts, out)


class NormRule(ElementwiseRule):
    """The affine part ``x̂ ⊙ γ + β`` of a normalisation layer, ``φ(x) = x̂`` its normalised input.

    ``nn.LayerNorm``/``nn.RMSNorm`` have parameters over the trailing ``normalized_shape``,
    ``nn.GroupNorm``/``nn.BatchNorm{1,2,3}d`` one per channel (axis 1; BatchNorm in eval mode with running
    statistics, which the kernel functions require).
    """

    def channels(self, module):
        if self.channels_last(module):
            return math.prod(module.normalized_shape)
        return module.num_channels if isinstance(module, nn.GroupNorm) else module.num_features

    def channels_last(self, module):
        return isinstance(module, (nn.LayerNorm, nn.RMSNorm))

    def keep(self, module, x):
        if isinstance(module, nn.LayerNorm):
            return F.layer_norm(x, module.normalized_shape, None, None, module.eps)
        if isinstance(module, nn.RMSNorm):
            return F.rms_norm(x, module.normalized_shape, None, module.eps)
        if isinstance(module, nn.GroupNorm):
            return F.group_norm(x, module.num_groups, None, None, module.eps)
        return F.batch_norm(x, module.running_mean, module.running_var, None, None, False, 0.0, module.eps)


class PReLURule(ElementwiseRule):
    """``nn.PReLU``: ``z = max(x, 0) + w ⊙ min(x, 0)``, ``φ(x) = min(x, 0)``; one ``w`` for all elements or one
    per channel (axis 1)."""

    def __init__(self) -> None:
        super().__init__(nn.PReLU)

    def channels(self, module):
        return module.num_parameters

    def channels_last(self, module):
        return module.num_parameters == 1

    def keep(self, module, x):
        return x.clamp(max=0)


class ScaleRule(ElementwiseRule):
    """A parameter ``w`` that multiplies a tensor ``x`` elementwise in an operation (``w * x``), whatever module
    owns it: T5's ``T5LayerNorm`` (``weight * hidden_states``), a layer scale ``γ [C, 1, 1]``.

    ``w`` broadcasts against the per-sample shape ``S`` of the product, so ``∂g/∂w = Σ_t D_t ⊙ x_t`` over the
    positions ``t`` along which it broadcasts: what a hook keeps of ``x`` and the output cotangent are put
    ``[B, T, P_w]`` (samples first, ``w``'s axes last) when they are captured (see
    :func:`pntk.kernels.structured.operations.samples_first`).
    """

    def __init__(self) -> None:
        super().__init__(nn.Module)

    def applies(self, module):
        return False  # never by type: sites come from the plan

    def inputs(self, module, xs):
        return _cat([x.unsqueeze(0) for x in xs], 2)

    def cotangents(self, module, dzs):
        return _cat([dz.transpose(0, 1).unsqueeze(0) for dz in dzs], 3)


#: The rule of ``nn.Linear`` (and of the heads of :class:`TiedLookupRule`).
LINEAR_RULE = LinearRule()

#: Every rule, tried in order; a module gets the first that applies.
RULES: tuple[Rule, ...] = (
    LINEAR_RULE,
    ConvRule(nn.Conv1d, 1),
    ConvRule(nn.Conv2d, 2),
    ConvRule(nn.Conv3d, 3),
    EmbeddingRule(),
    *map(NormRule, (nn.LayerNorm, nn.RMSNorm, nn.GroupNorm, nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)),
    PReLURule(),
)


def rule_for(module: nn.Module) -> Rule | None:
    """The rule that computes ``module`` exactly, or ``None``."""
    return next((rule for rule in RULES if rule.applies(module)), None)
