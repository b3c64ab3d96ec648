"""``pntk.explain``: what a kernel call would do on a model, and why, without computing the kernel."""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field

import torch
from torch import nn

from ..choices import parse_enum
from .fallback import FallbackWarning, fallback_reason
from .inputs import InputLike, Inputs
from .jacobian import JacobianEngine
from .kinds import Engine, Kind
from .model import functional_model
from .outputs import OutputLike
from .selection import ParamsLike
from .structured import StructuredEngine
from .structured.operations import OpSite
from .structured.plan import factored_cost, materialised_cost, pairs_per_sample, plan, unused_params


@dataclass(frozen=True)
class ParameterPath:
    """How the structured engine computes one parameter's part of the kernel.

    Attributes:
        name: the parameter's name; ``numel``: its number of entries.
        path: ``"factored rule"``, ``"materialised rule"``, ``"fallback"`` (per-sample gradients) or
            ``"unused"`` (no function takes it on the probe: a zero gradient, which every block's pass checks).
        rule: the layer or operation that the rule reads (``"Linear"``, ``"operation on ...weight"``), or
            ``""`` for a fallback or an unused parameter.
        cost: multiply-adds per pair of samples of its contraction (the layer's, for a ruled parameter).
    """

    name: str
    numel: int
    path: str
    rule: str
    cost: int


@dataclass(frozen=True)
class Explanation:
    """What :func:`explain` found.

    Attributes:
        kind, engine: the kind of kernel and the engine that ``engine=`` (``"auto"``) resolves to.
        reason: why that engine.
        N, O, P: samples, outputs, differentiated parameters.
        batch_size: the tile edge the kernel functions would use.
        ruled_fraction: the fraction of ``P`` under rules (factored or materialised).
        parameters: each parameter's path in the structured engine.
        fallback: why the per-sample gradients of fallback parameters need autograd loops (``vmap`` cannot
            trace the model), or ``None`` when ``vmap`` can.
        block_bytes: the memory of one prepared block of ``batch_size`` samples, by the chosen engine's estimate.
        tile_bytes: the predicted peak memory of the work on one tile (the plan's).
        block_memory: the memory budget of the plan.
        contraction_madds: multiply-adds of the structured contraction over all pairs of samples (half of
            them for a symmetric kernel); passes not included.
    """

    kind: Kind
    engine: Engine
    reason: str
    N: int
    O: int
    P: int
    batch_size: int
    ruled_fraction: float
    parameters: list[ParameterPath] = field(default_factory=list)
    fallback: str | None = None
    block_bytes: int = 0
    tile_bytes: int = 0
    block_memory: int = 0
    contraction_madds: int = 0

    def __str__(self) -> str:
        lines = [
            f"{self.kind.value} kernel of {self.N} samples, O = {self.O}, P = {self.P:,}",
            f"engine: {self.engine.value} — {self.reason}",
            f"under rules: {self.ruled_fraction:.1%} of P",
            f"tile edge {self.batch_size}: block {_bytes(self.block_bytes)}, tile {_bytes(self.tile_bytes)} "
            f"(budget {_bytes(self.block_memory)}); structured contraction {self.contraction_madds:.3g} multiply-adds",
        ]
        if self.fallback:
            lines.append(f"per-sample gradients by autograd loops: {self.fallback}")
        width = max((len(p.name) for p in self.parameters), default=4)
        lines.append(f"{'parameter':<{width}}  {'numel':>10}  path")
        for p in self.parameters:
            rule = f" ({p.rule})" if p.rule else ""
            lines.append(f"{p.name:<{width}}  {p.numel:>10,}  {p.path}{rule}")
        return "\n".join(lines)


def _bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} B"


def explain(
    model: nn.Module,
    x: InputLike,
    *,
    kind: Kind | str = Kind.PNTK,
    engine: Engine | str = Engine.AUTO,
    batch_size: int | None = None,
    dtype: torch.dtype | None = None,
    params: ParamsLike = None,
    output: OutputLike = None,
    memory: int | str | None = None,
) -> Explanation:
    """What ``pntk.kernel(model, x, kind=kind, engine=engine, ...)`` would do, and why.

    Runs the structured engine's plan (two probe passes on one sample) and one ``vmap`` trial on two samples;
    computes no kernel.

    Args:
        model, x, kind, engine, batch_size, dtype, params, output, memory: as for :func:`pntk.kernel` (``x``
            is the symmetric kernel's inputs ``[N, *input]``); the engine and tile are those of the plan
            (:func:`pntk.plan`).

    Returns:
        An :class:`Explanation`; ``print`` it for a table.

    Example:
        >>> import torch, pntk
        >>> net = torch.nn.Sequential(torch.nn.Linear(4, 16), torch.nn.ReLU(), torch.nn.Linear(16, 3)).eval()
        >>> e = pntk.explain(net, torch.randn(8, 4), kind="entk")
        >>> e.engine.value, e.ruled_fraction
        ('structured', 1.0)
    """
    kind = parse_enum(Kind, kind, "kind")
    engine = parse_enum(Engine, engine, "engine")
    X = Inputs.from_user(x, "x")
    fm = functional_model(model, X[:2], params=params, dtype=dtype, output=output)
    X = fm.prepare_inputs(X, "x")
    N, O, P = len(X), fm.num_outputs, fm.num_params
    from ..planning import engine_of, make_plan  # the planning module builds on this package

    planned = make_plan(fm, kind, N, N, symmetric=True, engine=engine, batch_size=batch_size, memory=memory)
    eng, batch_size = engine_of(planned), planned.tile
    chosen = parse_enum(Engine, eng.name, "engine")

    layers, fallback = plan(fm, X, kind)
    Q = pairs_per_sample(fm, kind)
    paths = {}
    for layer in layers:
        cost = (factored_cost if layer.factored else materialised_cost)(layer.rule, layer.shape, Q)
        what = str(layer.module) if isinstance(layer.module, OpSite) else type(layer.module).__name__
        if layer.heads:
            what += f" tied to {len(layer.heads)} Linear head(s), {len(layer.support)} of their rows"
        elif layer.support:
            what += f", the {len(layer.support)} rows of its output that the output reads"
        form = "factored rule" if layer.factored else "materialised rule"
        for name in layer.names:
            paths[name] = ParameterPath(name, fm.params[name].numel(), form, what, cost)
    for name in fallback:
        paths[name] = ParameterPath(name, fm.params[name].numel(), "fallback", "", Q * fm.params[name].numel())
    for name in unused_params(fm, X, kind):
        paths[name] = ParameterPath(name, fm.params[name].numel(), "unused", "", 0)
    parameters = [paths[n] for n in fm.params if n in paths]
    ruled = sum(p.numel for p in parameters if p.path.endswith("rule")) / max(1, P)
    layer_costs = {id(layer): paths[layer.names[0]].cost for layer in layers if layer.names}
    per_pair = sum(layer_costs.values()) + sum(p.cost for p in parameters if p.path == "fallback")

    reason = _reason(engine, chosen, ruled, fm, kind, N)
    return Explanation(
        kind=kind,
        engine=chosen,
        reason=reason,
        N=N,
        O=O,
        P=P,
        batch_size=batch_size,
        ruled_fraction=ruled,
        parameters=parameters,
        fallback=_vmap_trial(fm, X, kind) if fallback or chosen is Engine.JACOBIAN else None,
        block_bytes=eng.block_bytes(fm, batch_size, kind),
        tile_bytes=planned.tile_bytes,
        block_memory=planned.memory,
        contraction_madds=per_pair * N * (N + 1) // 2,
    )


def _reason(asked: Engine, chosen: Engine, ruled: float, fm, kind: Kind, N: int) -> str:
    if asked is not Engine.AUTO:
        return f"asked for with engine={asked.value!r}"
    if ruled >= 0.5:
        from ..planning import STRUCTURED_PASSES

        costs = StructuredEngine().costs(fm, kind)
        head = f"rules cover {ruled:.0%} of P (auto considers the structured engine from 50%)"
        if costs is None or costs.fallback == 0:
            return f"{head} and no parameter falls back"
        saving = N * (N + 1) // 2 * (pairs_per_sample(fm, kind) * fm.num_params - costs.pair)
        passes = N * STRUCTURED_PASSES * costs.sample
        weighed = f"its contraction saves {saving:.3g} multiply-adds, its own passes cost {passes:.3g}"
        if chosen is Engine.JACOBIAN:
            return (
                f"{head}, but {costs.fallback:,} numbers of P fall back to the Jacobian engine's pass and {weighed}: "
                "the Jacobian engine alone is cheaper"
            )
        if saving > passes:
            return f"{head}; {costs.fallback:,} numbers of P fall back, and {weighed}"
        return (
            f"{head}; {costs.fallback:,} numbers of P fall back, and vmap cannot trace the model (or the Jacobian "
            "engine's tile exceeds the budget): per-sample loops for those parameters only are cheaper"
        )
    if chosen is Engine.JACOBIAN:
        return (
            f"rules cover only {ruled:.0%} of P (< 50%), and a tile of the Jacobian engine's blocks fits the "
            "memory budget"
        )
    return (
        f"rules cover only {ruled:.0%} of P (< 50%), and a tile of the Jacobian engine's blocks exceeds the "
        "memory budget: NTK-vector products hold no Jacobian"
    )


def _vmap_trial(fm, X: Inputs, kind: Kind) -> str | None:
    """Why the Jacobian engine's ``vmap`` cannot trace the model on two samples, or ``None`` if it can."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FallbackWarning)
        JacobianEngine().prepare(fm, X[: min(2, len(X))], kind)
    return fallback_reason("jacobian", fm.module)
