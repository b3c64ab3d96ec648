"""The engines that exist, by name; ``Engine.AUTO`` chooses among them (:func:`pntk.planning.resolve_engine`)."""

from __future__ import annotations

from .engine import KernelEngine
from .jacobian import JacobianEngine
from .kinds import Engine
from .structured import StructuredEngine
from .vp import VPEngine

ENGINES: dict[Engine, KernelEngine] = {
    Engine.JACOBIAN: JacobianEngine(),
    Engine.VP: VPEngine(),
    Engine.STRUCTURED: StructuredEngine(),
}
