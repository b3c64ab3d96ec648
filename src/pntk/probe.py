"""Probes of a model's behaviour on a few inputs: are its samples independent and deterministic, and does it
still compute what it computed when a store was begun?

A kernel assumes that the output for one sample depends on that sample and the parameters only. A model that
mixes the samples of a batch (batch statistics, a mean over the batch), draws random numbers (dropout called
functionally) or lays its output out ``[O, B]`` gives a kernel that depends on the batch size, the engine or
the call, and nothing in its parameters shows it. :func:`check_samples` runs it on a couple of inputs in a few
ways and refuses it with the likely cause. :func:`behaviour` records its outputs and a directional
derivative on a probe batch in float64, so that a store refuses to be resumed by a model whose ``forward``
changed although its weights did not.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import torch
from torch import Tensor

from .errors import ModelError
from .kernels.inputs import Inputs
from .kernels.model import FunctionalModel

#: Inputs of the probe batch of :func:`behaviour` (the first ones given).
PROBE_SAMPLES = 4
#: Largest relative difference of two probes of the same model: float64 probes agree to rounding across
#: machines and thread counts; float32 ones (a model that cannot run in float64) much less closely.
BEHAVIOUR_TOLERANCE = {"float64": 1e-7, "float32": 1e-3}
#: The seed of the direction of the directional derivative in :func:`behaviour`.
DIRECTION_SEED = 0

_FIX = "pass check_samples=False only if you know the kernel is still what you want"


def check_samples(fm: FunctionalModel, x: Inputs, whole: Tensor | None = None) -> None:
    """Refuse a model whose output for a sample depends on the other samples of its batch, or on chance.

    On the batch ``x`` (two inputs are enough; one is completed by a second, made from it), the model must
    give ``[B, O]`` for every batch size, and for each sample the same output alone and in the batch, and in
    the batch reversed (to the dtype's rounding). Only when one of those differs are two more passes run, to
    tell randomness (two calls on the same batch differ) from samples that interact. The caller's random
    number generator state is left as it was.

    Cost: two forward passes of ``len(x)`` samples or fewer when ``whole`` is given (three otherwise), and two
    more to name a failure.

    Args:
        fm: the model.
        x: ``[B, *input]``, ready for ``fm`` (:meth:`FunctionalModel.prepare_inputs`).
        whole: the model's output on ``x``, if the caller has it (computed without gradients, with the
            caller's generator state left as it was); used only if ``x`` has two inputs or more.

    Raises:
        ModelError: naming the likely cause: an output whose first axis is not the sample axis (``[O, B]``),
            randomness in ``forward`` (functional dropout), or samples that interact (batch statistics).

    Example:
        >>> import torch
        >>> from pntk.kernels import functional_model
        >>> from pntk.kernels.inputs import Inputs
        >>> class Centred(torch.nn.Linear):
        ...     def forward(self, x):
        ...         y = super().forward(x)
        ...         return y - y.mean(0)
        >>> x = Inputs((torch.randn(2, 3),))
        >>> check_samples(functional_model(torch.nn.Linear(3, 2), x, check_samples=False), x)  # fine
        >>> check_samples(functional_model(Centred(3, 2), x, check_samples=False), x)
        Traceback (most recent call last):
        ...
        pntk.errors.ModelError: a sample's output depends on the other samples of its batch ...
    """
    if len(x) < 2:
        x, whole = _at_least_two(x), None
    B = len(x)
    devices = [fm.device] if fm.device.type == "cuda" else []
    with torch.no_grad(), torch.random.fork_rng(devices=devices):
        if whole is None:
            whole = _output(fm, x, None)
        first = _output(fm, x[:1], whole)
        reversed_back = _output(fm, x[torch.arange(B - 1, -1, -1)], whole).flip(0)
        if _close(first, whole[:1], fm.dtype) and _close(reversed_back, whole, fm.dtype):
            return
        # Something differs: the generator has moved on since ``whole``, so a random forward differs again.
        again = _output(fm, x, whole)
        split = torch.cat([first, _output(fm, x[1:], whole)])
    if not _close(again, whole, fm.dtype):
        raise ModelError(
            f"the model gives different outputs for the same inputs on two calls (largest difference "
            f"{_difference(again, whole):.3g} of the output scale): something in its forward is random, e.g. "
            "dropout called functionally (F.dropout(x, p, training=True)) or noise, so the kernel would be "
            "random. Call model.eval() and pass training=self.training to functional dropout, or remove the "
            f"randomness; {_FIX}"
        )
    for other, how in ((split, "alone or in a smaller batch"), (reversed_back, "in a batch of another order")):
        if not _close(other, whole, fm.dtype):
            raise ModelError(
                f"a sample's output depends on the other samples of its batch (its output {how} differs by "
                f"{_difference(other, whole):.3g} of the output scale from its output in the batch): the "
                "forward mixes samples, e.g. with batch statistics (BatchNorm without running statistics, "
                "subtracting the batch mean, normalising over axis 0) or attention across the batch axis, so "
                "the kernel would depend on batch_size and the engine. Compute every statistic per sample; "
                f"{_FIX}"
            )


def _output(fm: FunctionalModel, batch: Inputs, whole: Tensor | None) -> Tensor:
    """The model's output on ``batch``, refused unless it is ``[len(batch), O]`` (``whole``: the output on the
    whole probe batch, named in the message)."""
    out = fm(fm.params, batch)
    if not isinstance(out, Tensor) or out.dim() != 2 or out.shape[0] != len(batch):
        shape = list(out.shape) if isinstance(out, Tensor) else type(out).__name__
        raise ModelError(
            f"the model's output for {len(batch)} sample(s) has shape {shape}"
            + (f", and for the whole probe batch {list(whole.shape)}" if whole is not None else "")
            + ": its first axis is not the sample axis (an output laid out [O, B]?). Return one row per sample, "
            "[B, O], e.g. with out.T; otherwise outputs of different samples are mixed up"
        )
    return out


def behaviour(fm: FunctionalModel, x: Inputs) -> dict[str, Any]:
    """The model's outputs and their derivative along a fixed direction in parameter space, on a probe batch.

    With ``θ`` the parameters and ``v`` a direction drawn from a normal distribution seeded by
    :data:`DIRECTION_SEED`, the probe is ``f(θ, x)`` and ``∂f(θ + t·v, x)/∂t`` at ``t = 0`` (a JVP) on the
    first :data:`PROBE_SAMPLES` inputs of ``x``, computed in float64 (or in the model's dtype where the model
    cannot run in float64). Two models with the same weights whose ``forward`` differs give different probes.

    Args:
        fm: the model.
        x: ``[B, *input]`` inputs, ready for ``fm``.

    Returns:
        JSON-ready: ``{"dtype": "float64", "outputs": [[...]], "jvp": [[...]]}``, each ``[min(B, 4), O]``.

    Example:
        >>> import torch
        >>> from pntk.kernels import functional_model
        >>> from pntk.kernels.inputs import Inputs
        >>> x = Inputs((torch.randn(3, 2),))
        >>> probe = behaviour(functional_model(torch.nn.Linear(2, 5), x), x)
        >>> probe["dtype"], len(probe["outputs"]), len(probe["jvp"][0])
        ('float64', 3, 5)
    """
    x = x[:PROBE_SAMPLES]
    try:
        return _probe(fm, x, torch.float64)
    except (RuntimeError, TypeError):  # a model that builds tensors of its own dtype inside forward
        return _probe(fm, x, fm.dtype)


def behaviour_difference(stored: dict[str, Any], requested: dict[str, Any]) -> str | None:
    """How two probes of :func:`behaviour` differ, in words, or ``None`` when they agree to rounding."""
    tolerance = max(BEHAVIOUR_TOLERANCE.get(p["dtype"], 1e-2) for p in (stored, requested))
    parts = []
    for key, what in (("outputs", "outputs"), ("jvp", "directional derivative")):
        a, b = (torch.tensor(p[key], dtype=torch.float64) for p in (stored, requested))
        if a.shape != b.shape:
            parts.append(f"{what} of shape {list(b.shape)} instead of {list(a.shape)}")
        elif _difference(a, b) > tolerance:
            parts.append(f"{what} differ by {_difference(a, b):.3g} of their scale")
    if not parts:
        return None
    return (
        "the model's behaviour changed: on the probe inputs its "
        + " and ".join(parts)
        + " although its weights, module tree and inputs are the same, so its forward computes something else "
        "(changed code?)"
    )


def _probe(fm: FunctionalModel, x: Inputs, dtype: torch.dtype) -> dict[str, Any]:
    def cast(t: Tensor) -> Tensor:
        return t.to(dtype) if t.is_floating_point() else t

    fm = dataclasses.replace(
        fm,
        params={n: cast(p) for n, p in fm.params.items()},
        constants={n: cast(t) for n, t in fm.constants.items()},
        dtype=dtype,
    )
    x = x.map(cast)
    generator = torch.Generator().manual_seed(DIRECTION_SEED)
    drawn = {n: torch.randn(fm.params[n].shape, generator=generator, dtype=torch.float64) for n in sorted(fm.params)}
    direction = {n: drawn[n].to(fm.device, dtype) for n in fm.params}  # jvp wants the params' order
    outputs, derivative = torch.func.jvp(lambda p: fm(p, x), (fm.params,), (direction,))[:2]
    return {"dtype": str(dtype).removeprefix("torch."), "outputs": outputs.tolist(), "jvp": derivative.tolist()}


def _at_least_two(x: Inputs) -> Inputs:
    """``x``, or with one sample, that sample and a second one made from it (floating inputs scaled)."""
    if len(x) >= 2:
        return x
    partner = x.map(lambda t: t * 0.5 + 0.25 if t.is_floating_point() else t)
    return Inputs(tuple(torch.cat([a, b]) for a, b in zip(x.tensors, partner.tensors)), x.keys)


def _difference(a: Tensor, b: Tensor) -> float:
    """``max |a − b|`` relative to the larger of ``max |a|`` and ``max |b|``."""
    scale = max(a.abs().max().item(), b.abs().max().item(), torch.finfo(torch.float64).tiny)
    return (a.to(torch.float64) - b.to(torch.float64)).abs().max().item() / scale


def _close(a: Tensor, b: Tensor, dtype: torch.dtype) -> bool:
    # Batches of other sizes may run other matmul kernels: allow rounding, a few hundred ulps of the scale.
    return _difference(a, b) <= 256 * torch.finfo(dtype).eps
