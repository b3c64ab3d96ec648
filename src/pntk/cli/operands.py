"""What ``pntk eig`` and ``pntk regress`` multiply with: a network's kernel built from ``--model/--dataset``
(matrix-free) or a stored kernel (``--store``), and the JSON they print."""

from __future__ import annotations

import argparse
import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..data import one_hot_targets
from ..operators import KernelOperator, operator
from ..planning import memory_budget
from ..store import open as open_store
from .flags import COMMON_FLAGS, KERNEL_FLAGS, add_common_flags, resolve_device, torch_dtype
from .resolve import load_inputs, load_model, load_weights


def add_source_arguments(p: argparse.ArgumentParser) -> None:
    """``--store``, or the model and dataset options of ``pntk compute``, and the operator's options
    (``--batch-size`` is the samples per chunk of a pass, ``--memory`` the budget of a product; ``--params`` and
    ``--output`` select the network's parameters and outputs)."""
    add_common_flags(p, flags=COMMON_FLAGS + KERNEL_FLAGS)
    s = p.add_argument_group("a stored kernel")
    s.add_argument("--store", help="a complete kernel store (pntk compute --out ...), streamed tile by tile")
    m = p.add_argument_group("or a network's kernel, never formed")
    m.add_argument("--model", help="a zoo name (mlp, convnet, resnet18, wrn) or path/to/file.py:factory")
    m.add_argument("--width", type=int, help="zoo models: width")
    m.add_argument("--depth", type=int, help="zoo models: depth (default: the model's)")
    m.add_argument("--num-classes", type=int, help="zoo models: outputs O (default: the dataset's, else 10)")
    m.add_argument("--parametrization", default="standard", choices=("standard", "ntk"), help="zoo models")
    m.add_argument("--weights", help="a .safetensors file or a torch checkpoint (read with weights_only=True)")
    m.add_argument(
        "--dataset",
        help="a built-in name (digits, mnist1d, ...), a directory (with --dataset-format), "
        "or a .npy/.pt file of inputs",
    )
    m.add_argument("--dataset-format", help="what a dataset directory holds: cifar10, cifar100, mnist, fashion-mnist")
    m.add_argument("--split", default="train", help="train, test or all (default: train)")
    m.add_argument("--kind", default="pntk", choices=("pntk", "trace", "entk"), help="default: pntk")
    m.add_argument("--engine", default="auto", choices=("auto", "structured", "vp"), help="default: auto")
    p.add_argument("--json", metavar="FILE", help="also write the JSON result to FILE")
    p.add_argument("--progress", action=argparse.BooleanOptionalAction, help="progress bars (default: on a terminal)")


def check_source(args: argparse.Namespace) -> None:
    """Exactly one of ``--store`` and ``--model/--dataset``.

    Raises:
        ValueError: neither or both; ``--params`` or ``--output`` with ``--store``.
    """
    network = args.model is not None or args.dataset is not None
    if (args.store is None) == (not network) or (network and (args.model is None or args.dataset is None)):
        raise ValueError("pass either --store PATH, or both --model and --dataset (not both kinds)")
    if args.store is not None and (args.params is not None or args.output is not None):
        raise ValueError(
            "--params and --output select what a network's kernel is of; a store holds the selection it was "
            "computed with (pntk info shows it): pass them to pntk compute, or use --model and --dataset"
        )


def load_network(args: argparse.Namespace, split: str | None = None, n: int | None = None):
    """``(model, x, labels or None, num_classes)`` from the model and dataset options; a dataset brings its
    labels, a file of inputs those it holds (if any)."""
    inputs = load_inputs(
        args.dataset,
        split=split or args.split,
        n=n or args.num_samples,
        fmt=args.dataset_format,
        seed=args.data_seed,
    )
    x = inputs.x if isinstance(inputs.x, torch.Tensor) else torch.as_tensor(np.asarray(inputs.x))
    labels = inputs.record.get("labels")
    O = args.num_classes or inputs.num_classes or 10
    model, _ = load_model(
        args.model,
        in_shape=tuple(x.shape[1:]),
        num_classes=O,
        width=args.width,
        depth=args.depth,
        parametrization=args.parametrization,
        seed=args.seed,
    )
    if args.weights:
        load_weights(model, args.weights)
    model.to(resolve_device(args.device))
    return model, x, None if labels is None else torch.as_tensor(labels), O


def network_operator(
    args: argparse.Namespace, model, x1, x2=None, *, dtype: torch.dtype | None = None, memory: int | str | None = None
) -> KernelOperator:
    """The network's kernel as an operator, with the command's options; ``dtype`` and ``memory`` override
    ``--dtype`` and ``--memory``."""
    return operator(
        model,
        x1,
        x2,
        kind=args.kind,
        engine=args.engine,
        dtype=dtype or torch_dtype(args.dtype),
        batch_size=args.batch_size,
        memory=args.memory if memory is None else memory,
        progress=args.progress,
        params=args.params,
        output=args.output,
    )


def stored_operator(
    path: str, args: argparse.Namespace, *, dtype: torch.dtype | None = None, memory: int | str | None = None
):
    """A stored kernel as an operator, streamed; ``dtype`` and ``memory`` override ``--dtype`` and ``--memory``."""
    return open_store(path).operator(
        memory=args.memory if memory is None else memory,
        dtype=dtype or torch_dtype(args.dtype),
        progress=args.progress,
    )


def emit(result: dict[str, Any], args: argparse.Namespace) -> None:
    """Print ``result`` as JSON, and write it to ``--json`` if given."""
    text = json.dumps(_plain(result), indent=2)
    print(text)
    if args.json:
        Path(args.json).write_text(text + "\n")


def _plain(x: Any) -> Any:
    if isinstance(x, dict):
        return {k: _plain(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_plain(v) for v in x]
    if isinstance(x, torch.Tensor):
        return _plain(x.tolist())
    if isinstance(x, float) and not math.isfinite(x):
        return str(x)
    return x


def targets(labels, num_classes: int | None) -> tuple[torch.Tensor, torch.Tensor | None]:
    """``(Y [N, O] float64, labels [N] or None)`` from integer labels or a target matrix."""
    labels = torch.as_tensor(np.asarray(labels))
    if labels.dim() == 2:
        return labels.double(), None
    if labels.dim() != 1 or labels.is_floating_point():
        raise ValueError(f"labels must be [N] integers or [N, O] targets; got {list(labels.shape)} {labels.dtype}")
    O = num_classes or int(labels.max()) + 1
    return one_hot_targets(labels, O, dtype=torch.float64), labels


def refined(args: argparse.Namespace, device: torch.device, build: Callable[..., Any]) -> tuple[Any, Any | None]:
    """The operator that iterates, ``build(memory=...)``, and with ``--refine`` the same kernel with float64
    products, ``build(dtype=torch.float64, memory=...)`` (else ``None``). With ``--refine`` the first takes
    three quarters of the budget and the second an eighth: it multiplies once per outer step, and its factors
    need not stay cached."""
    if not args.refine:
        return build(memory=args.memory), None
    budget = memory_budget(device, args.memory)
    return build(memory=budget - budget // 4), build(dtype=torch.float64, memory=budget // 8)
