"""Parameter selection: which parameters ``θ`` a kernel differentiates.

``params=`` takes a dict of tensors by name (``torch.func`` style: the values replace the module's), name
patterns (``"classifier.*"``, ``"*.lora_*"``, a list of them; shell-style, matched against the full
parameter name), or a predicate ``(name, parameter) -> bool``. Patterns and predicates choose among all the
module's parameters, whatever their ``requires_grad``; without ``params=`` the kernel takes every parameter
that requires grad.
"""

from __future__ import annotations

import fnmatch
import hashlib
from collections.abc import Callable, Mapping, Sequence

from torch import Tensor, nn

from ..errors import InputError

#: What ``params=`` accepts.
ParamsLike = Mapping[str, Tensor] | str | Sequence[str] | Callable[[str, Tensor], bool] | None


def select_params(module: nn.Module, params: ParamsLike) -> dict[str, Tensor]:
    """The differentiated parameters of ``module`` by name, as ``params=`` selects them.

    Args:
        module: the network.
        params: ``None`` (every parameter with ``requires_grad``), a dict ``name -> tensor``, a pattern or a
            list of patterns, or a predicate ``(name, parameter) -> bool``.

    Returns:
        ``{name: tensor}`` in the module's parameter order (a dict's own order for a dict).

    Raises:
        InputError: a name of a dict is not a parameter, or its value not a floating tensor of that parameter's
            shape; a pattern matches no parameter (an ``InputError`` is a ``ValueError``).
        InputError: ``params`` is none of the above.

    Example:
        >>> net = nn.Sequential(nn.Linear(2, 3), nn.ReLU(), nn.Linear(3, 1))
        >>> list(select_params(net, "2.*"))
        ['2.weight', '2.bias']
        >>> list(select_params(net, lambda name, p: p.dim() == 2))
        ['0.weight', '2.weight']
    """
    named = dict(module.named_parameters())
    if params is None:
        return {n: p for n, p in named.items() if p.requires_grad}
    if isinstance(params, Mapping):
        return _checked_params(params, named)
    if isinstance(params, str) or (isinstance(params, Sequence) and params and all(isinstance(p, str) for p in params)):
        patterns = [params] if isinstance(params, str) else list(params)
        unmatched = [pat for pat in patterns if not any(fnmatch.fnmatchcase(n, pat) for n in named)]
        if unmatched:
            raise InputError(
                f"params patterns {unmatched} match no parameter of the model; its parameter names include "
                f"{list(named)[:8]} (patterns are shell-style, e.g. 'classifier.*' or '*.lora_*')"
            )
        return {n: p for n, p in named.items() if any(fnmatch.fnmatchcase(n, pat) for pat in patterns)}
    if callable(params):
        return {n: p for n, p in named.items() if params(n, p)}
    raise InputError(
        "params= must be a dict of tensors by name, a name pattern such as 'classifier.*', a list of patterns, "
        f"or a predicate (name, parameter) -> bool; got {type(params).__name__}"
    )


def params_key(module: nn.Module, selected: Mapping[str, Tensor]) -> str:
    """Which parameters of ``module`` are ``selected``, as text for a store's spec: their number, and a digest
    of their names (the values are in the model's fingerprint).

    >>> net = nn.Sequential(nn.Linear(2, 3), nn.ReLU(), nn.Linear(3, 1))
    >>> params_key(net, select_params(net, "2.*"))[:31]
    '2 of 4 parameter tensors, names'
    """
    digest = hashlib.sha256("\n".join(sorted(selected)).encode()).hexdigest()[:16]
    return f"{len(selected)} of {len(list(module.parameters()))} parameter tensors, names sha256:{digest}"


def group_of(name: str) -> str:
    """The parameter group of a parameter: the path of the module that owns it (``""`` for the root).

    >>> group_of("encoder.layer.0.attention.self.query.weight")
    'encoder.layer.0.attention.self.query'
    """
    return name.rpartition(".")[0]


def _checked_params(params: Mapping[str, Tensor], named: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """``params`` after checking that they name parameters of the model and are tensors of their shapes."""
    if not isinstance(params, Mapping):
        raise InputError(
            f"params must be a dict from parameter names to tensors (torch.func style), got {type(params).__name__}"
        )
    unknown = sorted(set(params) - set(named))
    if unknown:
        raise InputError(
            f"params names {unknown} are not parameters of the model; valid names include {sorted(named)[:8]}"
        )
    for name, value in params.items():
        if not isinstance(value, Tensor):
            raise InputError(
                f"params[{name!r}] is a {type(value).__name__}, not a tensor; pass torch.as_tensor(...) of shape "
                f"{list(named[name].shape)}"
            )
        if value.shape != named[name].shape:
            raise InputError(
                f"params[{name!r}] has shape {list(value.shape)} but the model's parameter {name!r} has shape "
                f"{list(named[name].shape)}; pass a tensor of the parameter's shape"
            )
        if not value.is_floating_point():
            raise InputError(f"params[{name!r}] has dtype {value.dtype}; parameters must be floating tensors")
    return dict(params)
