"""Experiment results on disk: JSON files in which a non-finite number is written as ``null``."""

from __future__ import annotations

import dataclasses
import enum
import json
import math
from pathlib import Path
from typing import Any


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
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    return value


def model_label(spec: dict) -> str:
    """``"{model} on {dataset}"``, naming the parametrisation when it is not PyTorch's standard one.

    Example:
        >>> model_label({"model": "convnet", "dataset": "mnist1d", "parametrization": "ntk"})
        'convnet (NTK param.) on mnist1d'
    """
    ntk = " (NTK param.)" if spec.get("parametrization") == "ntk" else ""
    return f"{spec['model']}{ntk} on {spec['dataset']}"


def file_stem(experiment: str, dataset: str, model: str, parametrization: str = "standard") -> str:
    """The file-name stem of an experiment, e.g. ``width_sweep_mnist1d_convnet_ntk``."""
    return f"{experiment}_{dataset}_{model}" + ("" if parametrization == "standard" else f"_{parametrization}")


def write_json(path: str | Path, value: Any) -> Path:
    """Write ``value`` (see :func:`jsonable`) as indented JSON to ``path``, creating its folder; returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(jsonable(value), indent=2, allow_nan=False) + "\n")
    return path


def read_json(path: str | Path) -> Any:
    """The value of a JSON file written by :func:`write_json`."""
    return json.loads(Path(path).read_text())
