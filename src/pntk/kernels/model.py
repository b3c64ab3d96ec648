"""A network seen as a function of its parameters: ``f(θ, x) -> [B, O]``, checked before any kernel work."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn
from torch.func import functional_call

from ..choices import parse_dtype
from ..errors import InputError, ModelError
from .inputs import Inputs
from .outputs import OutputLike, describe, output_hint, output_selector
from .selection import ParamsLike, select_params

_DROPOUT = (nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, nn.AlphaDropout, nn.FeatureAlphaDropout)


@dataclass(frozen=True)
class FunctionalModel:
    """An ``nn.Module`` with the parameters a kernel differentiates and the tensors it holds fixed.

    Attributes:
        module: the network; its own tensors are never modified.
        params: the differentiated parameters ``θ`` by name (``P`` numbers in all), in ``dtype``.
        constants: every other parameter and buffer (BatchNorm running statistics), in ``dtype`` where
            floating.
        num_outputs: ``O``, the width of the output ``[B, O]``.
        device: where ``params`` live; inputs must be there too.
        dtype: the floating dtype of the computation.
        casts_inputs: whether floating inputs of another dtype are cast (``dtype`` was asked for) or refused.
        output: turns the module's output into ``[B, O]`` (``output=``); ``None`` keeps it.
        sample: the few inputs the model was checked on, ready for it (what engines probe the model with).
    """

    module: nn.Module
    params: dict[str, Tensor]
    constants: dict[str, Tensor]
    num_outputs: int
    device: torch.device
    dtype: torch.dtype
    casts_inputs: bool = False
    output: Callable[[Any], Tensor] | None = None
    sample: Inputs | None = None

    @property
    def num_params(self) -> int:
        """``P``, the number of differentiated parameters."""
        return sum(p.numel() for p in self.params.values())

    def __call__(self, params: Mapping[str, Tensor], x: Inputs) -> Tensor:
        """``f(θ, x)``: the network's output ``[B, O]`` for a batch ``x`` with parameters ``params``."""
        tensors = {**self.constants, **params}
        if x.keys is None:
            out = functional_call(self.module, tensors, x.tensors)
        else:
            out = functional_call(self.module, tensors, (), dict(zip(x.keys, x.tensors)))
        return out if self.output is None else self.output(out)

    def prepare_inputs(self, x: Inputs, name: str) -> Inputs:
        """Check that ``x`` is finite and on this model's device, and cast floating tensors to ``dtype``.

        Raises:
            InputError: ``x`` is empty, holds NaN/Inf, sits on another device, or (when no ``dtype`` was
                requested) has a floating dtype other than the model's.
        """
        if len(x) == 0:
            raise InputError(f"{name} is empty (0 samples); pass at least one sample")
        for t in x.tensors:
            if t.device != self.device:
                raise InputError(
                    f"{name} is on {t.device} but the model's parameters are on {self.device}; "
                    f"move the inputs with x.to({str(self.device)!r})"
                )
            if t.is_floating_point() or t.is_complex():
                if not _all_finite(t):
                    raise InputError(f"{name} contains NaN or Inf; clean or impute the inputs first")
                if t.dtype != self.dtype and not self.casts_inputs:
                    raise InputError(
                        f"{name} has dtype {t.dtype} but the model computes in {self.dtype}; convert the "
                        f"inputs with x.to({self.dtype}) or pass dtype= to compute in one dtype"
                    )
        return x.map(lambda t: t.to(self.dtype) if t.is_floating_point() else t)


def functional_model(
    module: nn.Module,
    sample: Inputs,
    *,
    params: ParamsLike = None,
    dtype: torch.dtype | str | None = None,
    device: torch.device | str | None = None,
    check_samples: bool = True,
    output: OutputLike = None,
) -> FunctionalModel:
    """Check ``module`` and split its tensors into differentiated parameters and constants.

    Args:
        module: any ``nn.Module`` whose output for a batch of ``B`` samples is ``[B, O]``.
        sample: a few inputs used to check the output shape (one forward pass, no gradient).
        params: parameters to differentiate: a dict by the module's parameter names (``torch.func`` style,
            the values replace the module's), name patterns (``"classifier.*"``, ``"*.lora_*"``) or a
            predicate ``(name, parameter) -> bool`` (:func:`~pntk.kernels.selection.select_params`); default:
            every parameter with ``requires_grad``. Parameters not selected are held fixed.
        dtype: compute in this floating dtype (tensors are cast, the module is untouched), e.g.
            ``torch.float64`` or ``"float64"``; default: the dtype of the module's parameters.
        device: compute on this device (tensors are copied there, the module is untouched); default: the
            device of the module's tensors. ``sample`` is moved there.
        check_samples: check on ``sample`` that each sample's output depends on that sample only and is
            deterministic (:func:`pntk.probe.check_samples`, a few forward passes). Turning it off risks a
            kernel that is silently wrong: random, or dependent on the batch size and the engine.
        output: what of the module's output is ``f(x) ∈ R^O``: a callable, a field name such as
            ``"logits"`` of a ``ModelOutput``/dict, or :class:`~pntk.kernels.outputs.LabelWords`; default: the
            output itself.

    Raises:
        TypeError: ``module`` is not an ``nn.Module``.
        ModelError: samples would interact (training-mode BatchNorm, batch-statistics BatchNorm, batch
            means) or be random (training-mode Dropout, functional dropout); no trainable parameter; NaN/Inf in
            a parameter or buffer; parameters on the meta device, on several devices or of several dtypes; an
            output that is not ``[B, O]``; a forward that fails on ``sample``.
        InputError: ``params`` that are not tensors of the parameters' shapes; an unknown ``dtype``; inputs
            the model cannot take (integers to a floating model).
    """
    if not isinstance(module, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(module).__name__}")
    _check_samples_independent(module)

    named: dict[str, Tensor] = dict(module.named_parameters())
    chosen = select_params(module, params)
    if not chosen:
        raise ModelError(
            "the model has no trainable parameters (none with requires_grad=True and no params= given); "
            "the NTK is taken with respect to parameters, so enable requires_grad on some of them"
        )
    constants = {n: p for n, p in named.items() if n not in chosen}
    constants.update(dict(module.named_buffers()))

    if device is not None:
        device = torch.device(device)
        chosen = {n: p.to(device) for n, p in chosen.items()}
        constants = {n: t.to(device) for n, t in constants.items()}
        sample = sample.map(lambda t: t.to(device))
    devices = {t.device for t in [*chosen.values(), *constants.values()]} or {torch.device("cpu")}
    if len(devices) > 1:
        raise ModelError(
            f"the model's parameters and buffers are on several devices {sorted(map(str, devices))}; "
            "move the whole model to one device with model.to(device)"
        )
    (model_device,) = devices
    _check_not_meta(model_device)
    float_dtypes = {t.dtype for t in [*chosen.values(), *constants.values()] if t.is_floating_point()}
    dtype = parse_dtype(dtype)
    casts_inputs = dtype is not None
    if dtype is None:
        if len(float_dtypes) > 1:
            raise ModelError(
                f"the model mixes parameter dtypes {sorted(map(str, float_dtypes))}; convert it with "
                "model.to(torch.float32) or pass dtype= to compute in one dtype"
            )
        dtype = next(iter(float_dtypes)) if float_dtypes else torch.get_default_dtype()
    if not dtype.is_floating_point:
        raise InputError(f"dtype must be a floating dtype such as torch.float32 or torch.float64, got {dtype}")

    for name, t in [*chosen.items(), *constants.items()]:
        if t.is_floating_point() and not _all_finite(t):
            raise ModelError(f"model tensor {name!r} contains NaN or Inf; re-initialise or load valid weights")

    def cast(t: Tensor) -> Tensor:
        return t.detach().to(dtype) if t.is_floating_point() else t

    fm = FunctionalModel(
        module=module,
        params={n: cast(p) for n, p in chosen.items()},
        constants={n: cast(t) for n, t in constants.items()},
        num_outputs=0,
        device=model_device,
        dtype=dtype,
        casts_inputs=casts_inputs,
        output=output_selector(output),
    )
    x = fm.prepare_inputs(sample, "x1")
    out = _first_forward(fm, x)
    if not isinstance(out, Tensor) or out.dim() != 2 or out.shape[0] != len(x):
        hint = (
            " (for one output use out.unsqueeze(-1) or a final nn.Linear(..., 1))"
            if (isinstance(out, Tensor) and out.dim() == 1)
            else " (its first axis is not the sample axis: an output laid out [O, B]? return out.T)"
            if (isinstance(out, Tensor) and out.dim() == 2 and out.shape[1] == len(x))
            else ""
        )
        raise ModelError(
            f"the model's output for {len(x)} samples is {describe(out)}; it must be [B, O] with one row "
            f"per sample{hint}; wrap the model so that it returns a 2-D tensor, e.g. flatten extra axes"
            f"{output_hint(out)}"
        )
    fm = dataclasses.replace(fm, num_outputs=out.shape[1], sample=x)
    if check_samples:
        from ..probe import check_samples as check  # the probe module builds on this one

        check(fm, x, out)
    return fm


def _all_finite(t: Tensor) -> bool:
    """Whether ``t`` holds no NaN or Inf: ``0·x`` is NaN exactly for those, and one reduction is cheaper
    than an elementwise mask."""
    return bool(torch.isfinite((t * 0).sum()))


def _check_samples_independent(module: nn.Module) -> None:
    """Refuse modules whose output for one sample depends on the others, or on chance."""
    for name, m in module.named_modules():
        where = f" ({name})" if name else ""
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            if m.training:
                raise ModelError(
                    f"model is in training mode and has BatchNorm layers{where}, whose outputs mix "
                    "samples; call model.eval() first"
                )
            if not m.track_running_stats or m.running_mean is None:
                raise ModelError(
                    f"BatchNorm layer{where} keeps no running statistics, so it normalises with batch "
                    "statistics even in eval mode and mixes samples; use track_running_stats=True, or "
                    "GroupNorm/LayerNorm"
                )
        if isinstance(m, nn.MultiheadAttention) and m.training and m.dropout > 0:
            raise ModelError(
                f"model is in training mode and has nn.MultiheadAttention{where} with dropout={m.dropout}, which "
                "drops attention weights at random and makes the kernel random; call model.eval() first"
            )
        if isinstance(m, _DROPOUT) and m.training and m.p > 0:
            raise ModelError(
                f"model is in training mode and has Dropout layers{where}, which make the kernel "
                "random; call model.eval() first"
            )


def _check_not_meta(device: torch.device) -> None:
    if device.type == "meta":
        raise ModelError(
            "the model's tensors are on the meta device, which holds shapes but no values; materialise them "
            "first, e.g. model.to_empty(device='cpu') then load_state_dict(...) or reset_parameters()"
        )


def _first_forward(fm: FunctionalModel, x: Inputs) -> Tensor:
    """The model's output on ``x``; a forward that fails is reported with what the inputs were.

    Raises:
        InputError: integer inputs to a model that computes in floating point.
        ModelError: any other failure of the forward pass.
    """
    devices = [fm.device] if fm.device.type == "cuda" else []
    try:
        with torch.no_grad(), torch.random.fork_rng(devices=devices):  # leave the caller's generator alone
            return fm(fm.params, x)
    except (RuntimeError, TypeError, ValueError, IndexError) as err:
        described = ", ".join(f"{list(t.shape)} {t.dtype}" for t in x.tensors)
        integers = [t for t in x.tensors if not (t.is_floating_point() or t.is_complex())]
        message = str(err).lower()
        if integers and any(word in message for word in ("dtype", "scalar type", "float", "long", "int")):
            raise InputError(
                f"the model failed on inputs of dtype {integers[0].dtype} ({type(err).__name__}: {err}); it "
                f"computes in {fm.dtype}, so convert the inputs with x.to({fm.dtype}) (integer inputs suit only "
                "models that take indices, e.g. an nn.Embedding)"
            ) from err
        raise ModelError(
            f"the model's forward failed on {len(x)} samples of x1 ({described}): {type(err).__name__}: {err}; "
            "check that the inputs have the shape and dtype the model expects, with a leading sample axis"
        ) from err
