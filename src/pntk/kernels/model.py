"""A network seen as a function of its parameters: ``f(θ, x) -> [B, O]``, checked before any kernel work."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn
from torch.func import functional_call

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
            ValueError: ``x`` is empty, holds NaN/Inf, sits on another device, or (when no ``dtype`` was
                requested) has a floating dtype other than the model's.
        """
        if len(x) == 0:
            raise ValueError(f"{name} is empty (0 samples); pass at least one sample")
        for t in x.tensors:
            if t.device != self.device:
                raise ValueError(
                    f"{name} is on {t.device} but the model's parameters are on {self.device}; "
                    f"move the inputs with x.to({str(self.device)!r})"
                )
            if t.is_floating_point() or t.is_complex():
                if not _all_finite(t):
                    raise ValueError(f"{name} contains NaN or Inf; clean or impute the inputs first")
                if t.dtype != self.dtype and not self.casts_inputs:
                    raise ValueError(
                        f"{name} has dtype {t.dtype} but the model computes in {self.dtype}; convert the "
                        f"inputs with x.to({self.dtype}) or pass dtype= to compute in one dtype"
                    )
        return x.map(lambda t: t.to(self.dtype) if t.is_floating_point() else t)


def functional_model(
    module: nn.Module,
    sample: Inputs,
    *,
    params: ParamsLike = None,
    dtype: torch.dtype | None = None,
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
        dtype: compute in this floating dtype (tensors are cast, the module is untouched); default: the
            dtype of the module's parameters.
        output: what of the module's output is ``f(x) ∈ R^O``: a callable, a field name such as
            ``"logits"`` of a ``ModelOutput``/dict, or :class:`~pntk.kernels.outputs.LabelWords`; default: the
            output itself.

    Raises:
        TypeError: ``module`` is not an ``nn.Module``.
        ValueError: samples would interact (training-mode BatchNorm, batch-statistics BatchNorm) or be
            random (training-mode Dropout); no trainable parameter; NaN/Inf in a parameter or buffer;
            parameters on several devices or of several dtypes; an output that is not ``[B, O]``.
    """
    if not isinstance(module, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(module).__name__}")
    _check_samples_independent(module)

    named = dict(module.named_parameters())
    chosen = select_params(module, params)
    if not chosen:
        raise ValueError(
            "the model has no trainable parameters (none with requires_grad=True and no params= given); "
            "the NTK is taken with respect to parameters, so enable requires_grad on some of them"
        )
    constants = {n: p for n, p in named.items() if n not in chosen}
    constants.update(dict(module.named_buffers()))

    devices = {t.device for t in [*chosen.values(), *constants.values()]}
    if len(devices) > 1:
        raise ValueError(
            f"the model's parameters and buffers are on several devices {sorted(map(str, devices))}; "
            "move the whole model to one device with model.to(device)"
        )
    (device,) = devices
    float_dtypes = {t.dtype for t in [*chosen.values(), *constants.values()] if t.is_floating_point()}
    casts_inputs = dtype is not None
    if dtype is None:
        if len(float_dtypes) > 1:
            raise ValueError(
                f"the model mixes parameter dtypes {sorted(map(str, float_dtypes))}; convert it with "
                "model.to(torch.float32) or pass dtype= to compute in one dtype"
            )
        dtype = next(iter(float_dtypes)) if float_dtypes else torch.get_default_dtype()
    if not dtype.is_floating_point:
        raise ValueError(f"dtype must be a floating dtype such as torch.float32 or torch.float64, got {dtype}")

    for name, t in [*chosen.items(), *constants.items()]:
        if t.is_floating_point() and not _all_finite(t):
            raise ValueError(f"model tensor {name!r} contains NaN or Inf; re-initialise or load valid weights")

    def cast(t: Tensor) -> Tensor:
        return t.detach().to(dtype) if t.is_floating_point() else t

    fm = FunctionalModel(
        module=module,
        params={n: cast(p) for n, p in chosen.items()},
        constants={n: cast(t) for n, t in constants.items()},
        num_outputs=0,
        device=device,
        dtype=dtype,
        casts_inputs=casts_inputs,
        output=output_selector(output),
    )
    x = fm.prepare_inputs(sample, "x1")
    with torch.no_grad():
        out = fm(fm.params, x)
    if not isinstance(out, Tensor) or out.dim() != 2 or out.shape[0] != len(x):
        hint = (
            " (for one output use out.unsqueeze(-1) or a final nn.Linear(..., 1))"
            if (isinstance(out, Tensor) and out.dim() == 1)
            else ""
        )
        raise ValueError(
            f"the model's output for {len(x)} samples is {describe(out)}; it must be [B, O] with one row "
            f"per sample{hint}; wrap the model so that it returns a 2-D tensor, e.g. flatten extra axes"
            f"{output_hint(out)}"
        )
    return dataclasses.replace(fm, num_outputs=out.shape[1], sample=x)


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
                raise ValueError(
                    f"model is in training mode and has BatchNorm layers{where}, whose outputs mix "
                    "samples; call model.eval() first"
                )
            if not m.track_running_stats or m.running_mean is None:
                raise ValueError(
                    f"BatchNorm layer{where} keeps no running statistics, so it normalises with batch "
                    "statistics even in eval mode and mixes samples; use track_running_stats=True, or "
                    "GroupNorm/LayerNorm"
                )
        if isinstance(m, _DROPOUT) and m.training and m.p > 0:
            raise ValueError(
                f"model is in training mode and has Dropout layers{where}, which make the kernel "
                "random; call model.eval() first"
            )
