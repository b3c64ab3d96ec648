"""Experiment results on disk: dataclasses written as JSON (a non-finite number as ``null``) and read back.

Every experiment returns a frozen dataclass (its spec, its per-run records, its fitted rates); the report,
the figures and the CLI read those attributes, never dict keys. :func:`write_json` writes any of them with an
``"experiment"`` tag, :func:`read_result` gives the same dataclass back, checked against its field types.
"""

from __future__ import annotations

import dataclasses
import enum
import json
import math
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from ..models import Parametrization

T = TypeVar("T")

#: The result dataclass of each ``"experiment"`` tag, filled in by the experiment modules.
RESULT_TYPES: dict[str, type] = {}


def result_type(tag: str) -> Any:
    """Class decorator: register a result dataclass under the ``"experiment"`` tag ``tag``."""

    def register(cls: type[T]) -> type[T]:
        RESULT_TYPES[tag] = cls
        cls.experiment = tag  # type: ignore[attr-defined]
        return cls

    return register


def jsonable(value: Any) -> Any:
    """``value`` as plain JSON values: dataclasses as dicts, enums as their values, tuples as lists, and every
    non-finite float (``inf``, ``nan``) as ``None``.

    JSON has no infinity: ``null`` stands for an infinite condition number or an undefined relative error.

    Example:
        >>> jsonable({"cond": float("inf"), "widths": (16, 32)})
        {'cond': None, 'widths': [16, 32]}
    """
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return jsonable({f.name: getattr(value, f.name) for f in dataclasses.fields(value)})
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, np.generic):
        return jsonable(value.item())
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    return value


def from_jsonable(cls: Any, value: Any) -> Any:
    """Rebuild a value of type ``cls`` from what :func:`jsonable` made of it.

    Dataclasses (nested), ``tuple[X, ...]``, ``list[X]``, ``dict[str, X]``, ``X | None``, enums and plain
    numbers are rebuilt from their annotations; ``null`` for a ``float`` field becomes ``nan``.

    Raises:
        TypeError: when ``value`` does not fit ``cls``.

    Example:
        >>> from pntk.experiments.stats import Rate
        >>> from_jsonable(Rate, {"slope": -0.5, "lo": -0.6, "hi": -0.4, "widths": [64, 128], "replicates": 10})
        Rate(slope=-0.5, lo=-0.6, hi=-0.4, widths=(64, 128), replicates=10)
    """
    origin = typing.get_origin(cls)
    if origin in (typing.Union, types.UnionType):
        options = typing.get_args(cls)
        if value is None and type(None) in options:
            return None
        for option in options:
            if option is type(None):
                continue
            try:
                return from_jsonable(option, value)
            except (TypeError, ValueError):
                continue
        raise TypeError(f"{value!r} fits none of {cls}")
    if dataclasses.is_dataclass(cls) and isinstance(cls, type):
        if not isinstance(value, dict):
            raise TypeError(f"{cls.__name__} needs a JSON object, got {type(value).__name__}")
        hints = typing.get_type_hints(cls)
        fields = {f.name for f in dataclasses.fields(cls) if f.init}
        return cls(**{k: from_jsonable(hints[k], v) for k, v in value.items() if k in fields})
    if origin is tuple:
        args = typing.get_args(cls)
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(from_jsonable(args[0], v) for v in _list(value, cls))
        return tuple(from_jsonable(a, v) for a, v in zip(args, _list(value, cls)))
    if origin is list:
        return [from_jsonable(typing.get_args(cls)[0], v) for v in _list(value, cls)]
    if origin is dict:
        if not isinstance(value, dict):
            raise TypeError(f"{cls} needs a JSON object, got {type(value).__name__}")
        return {k: from_jsonable(typing.get_args(cls)[1], v) for k, v in value.items()}
    if isinstance(cls, type) and issubclass(cls, enum.Enum):
        return cls(value)
    if cls is float:
        if value is None:
            return math.nan
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise TypeError(f"expected a number, got {value!r}")
        return float(value)
    if cls is Any:
        return value
    if isinstance(cls, type) and not isinstance(value, cls):
        raise TypeError(f"expected {cls.__name__}, got {value!r}")
    return value


def _list(value: Any, cls: Any) -> list:
    if not isinstance(value, list):
        raise TypeError(f"{cls} needs a JSON array, got {type(value).__name__}")
    return value


def model_label(spec: Any) -> str:
    """``"{model} ({parametrisation}) on {dataset}"`` for any experiment spec.

    Example:
        >>> from pntk.experiments.width_sweep import WidthSweep
        >>> model_label(WidthSweep("mnist1d", "convnet", widths=(16, 32), parametrization="ntk"))
        'convnet (NTK param.) on mnist1d'
    """
    label = Parametrization(getattr(spec, "parametrization", "standard")).label
    return f"{spec.model} ({label}) on {spec.dataset}"


def file_stem(experiment: str, dataset: str, model: str, parametrization: str = "standard") -> str:
    """The file-name stem of an experiment, e.g. ``width_sweep_mnist1d_convnet_ntk``."""
    return f"{experiment}_{dataset}_{model}" + ("" if parametrization == "standard" else f"_{parametrization}")


def write_json(path: str | Path, value: Any) -> Path:
    """Write ``value`` (see :func:`jsonable`) as indented JSON to ``path``, creating its folder; a registered
    result dataclass is tagged with its ``"experiment"``. Returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    data = jsonable(value)
    tag = getattr(value, "experiment", None)
    if isinstance(data, dict) and tag in RESULT_TYPES:
        data = {"experiment": tag, **data}
    path.write_text(json.dumps(data, indent=2, allow_nan=False) + "\n")
    return path


def read_json(path: str | Path) -> Any:
    """The plain value of a JSON file written by :func:`write_json`."""
    return json.loads(Path(path).read_text())


def read_result(path: str | Path) -> Any:
    """The result dataclass written to ``path`` by :func:`write_json`, rebuilt from its ``"experiment"`` tag.

    Raises:
        ValueError: if the file holds no known experiment.
    """
    data = read_json(path)
    tag = data.get("experiment") if isinstance(data, dict) else None
    if tag not in RESULT_TYPES:
        raise ValueError(f"{path} holds no experiment result (tag {tag!r}; known: {', '.join(RESULT_TYPES)})")
    return from_jsonable(RESULT_TYPES[tag], data)
