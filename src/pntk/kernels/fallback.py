"""Exact fallbacks for models that ``torch.func`` transforms cannot trace.

``vmap`` cannot trace ``.item()``, data-dependent control flow, or in-place updates of an unbatched tensor
(recurrent layers' hidden-state handling); forward-mode AD is missing for some fused kernels (attention).
Where an engine's vectorised path fails for such a reason, it computes the same numbers another way:

- per-sample gradients by one autograd pass per sample (and per output for the eNTK and trace), over the
  same parameters, which every model that runs on one sample allows;
- Jacobian-vector products by reverse-over-reverse (the double-VJP trick): ``J t = ∂(Jᵀu)/∂u · t``.

Each fallback warns once per model and engine, naming the cause and the module where tracing failed.
"""

from __future__ import annotations

import math
import warnings
import weakref
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TypeVar

import torch
from torch import Tensor, nn
from torch.nn.modules.module import register_module_forward_hook, register_module_forward_pre_hook

from .inputs import Inputs
from .kinds import Kind
from .model import FunctionalModel

#: The errors a transform raises when it cannot trace a model (``vmap``'s data-dependent control flow and
#: in-place errors are ``RuntimeError``; missing forward-mode formulas are ``NotImplementedError``). Anything
#: else is a genuine error and propagates.
TRACE_ERRORS = (RuntimeError, NotImplementedError)

#: Models (by module) whose vectorised path failed, per engine: the reason, so that later blocks go straight
#: to the fallback and the warning is given once.
_FAILED: dict[str, weakref.WeakKeyDictionary[nn.Module, str]] = {}

T = TypeVar("T")


class FallbackWarning(UserWarning):
    """An engine computes a kernel by a slower exact path because a transform could not trace the model."""


@contextmanager
def module_stack(root: nn.Module) -> Iterator[list[str]]:
    """Track which modules of ``root`` are running: the yielded list holds their paths, innermost last.

    After an exception inside the block, the list still names the modules that were running when it was
    raised (a module's exit is not recorded when it raises).
    """
    names = {id(m): (name or type(root).__name__) for name, m in root.named_modules()}
    stack: list[str] = []

    def enter(module, args):
        if id(module) in names:
            stack.append(f"{names[id(module)]} ({type(module).__name__})")

    def leave(module, args, output):
        if id(module) in names and stack:
            stack.pop()

    handles = [register_module_forward_pre_hook(enter), register_module_forward_hook(leave)]
    try:
        yield stack
    finally:
        for h in handles:
            h.remove()


def cause(error: BaseException) -> str:
    """The first line of an error message, shortened."""
    line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    return line if len(line) <= 160 else line[:157] + "..."


def attempt(
    engine: str, fm: FunctionalModel, vectorised: Callable[[], T], fallback: Callable[[], T], instead: str
) -> T:
    """``vectorised()``, or ``fallback()`` with one warning if it raises one of :data:`TRACE_ERRORS`.

    Args:
        engine: the engine's name, for the warning and the memory of failures.
        fm: the model.
        vectorised: the fast path.
        fallback: the exact slower path.
        instead: what the fallback does, for the warning.
    """
    failed = _FAILED.setdefault(engine, weakref.WeakKeyDictionary())
    if fm.module in failed:
        return fallback()
    try:
        with module_stack(fm.module) as stack:
            return vectorised()
    except TRACE_ERRORS as error:
        where = stack[-1] if stack else type(fm.module).__name__
        failed[fm.module] = reason = f"{cause(error)} (in {where})"
    warnings.warn(
        f"engine {engine!r}: the model cannot be traced by torch.func: {reason}; {instead} (exact, slower)",
        FallbackWarning,
        stacklevel=4,
    )
    return fallback()


def fallback_reason(engine: str, module: nn.Module) -> str | None:
    """Why ``engine`` fell back on ``module`` in this process, or ``None`` if it has not."""
    failed = _FAILED.get(engine)
    return None if failed is None else failed.get(module)


def leaves(params: dict[str, Tensor]) -> dict[str, Tensor]:
    """Fresh leaves that require grad, holding the values of ``params``."""
    return {n: p.detach().requires_grad_() for n, p in params.items()}


def per_sample_jacobians(fm: FunctionalModel, x: Inputs, kind: Kind) -> list[Tensor]:
    """The Jacobian engine's per-sample Jacobians by plain autograd, one sample at a time.

    Cost: ``B`` forward passes of one sample and ``B`` backward passes (``B·O`` for the eNTK and trace).

    Returns:
        one tensor per parameter, ``[B, R, numel]`` with ``R = 1`` for the pNTK (the gradient of
        ``g = O^{-1/2} Σ_a f_a``) and ``R = O`` otherwise.
    """
    O, B = fm.num_outputs, len(x)
    R = 1 if kind is Kind.PNTK else O
    params = leaves(fm.params)
    J = [p.new_empty(B, R, p.numel()) for p in params.values()]
    with torch.enable_grad():
        for n in range(B):
            out = fm(params, x[n : n + 1])[0]
            rows = [out.sum() / math.sqrt(O)] if kind is Kind.PNTK else list(out)
            for r, f in enumerate(rows):
                if not f.requires_grad:  # the output does not depend on the parameters
                    for j in J:
                        j[n, r] = 0
                    continue
                grads = torch.autograd.grad(f, list(params.values()), retain_graph=r + 1 < len(rows), allow_unused=True)
                for j, g in zip(J, grads):
                    j[n, r] = 0 if g is None else g.reshape(-1)
    return J
