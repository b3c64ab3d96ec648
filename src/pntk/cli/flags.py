"""The options every subcommand that computes shares, defined once so that subcommands cannot drift apart.

A subcommand calls :func:`add_common_flags` with the flags it uses (and, where it must, its own defaults);
the names, types, meanings and help texts come from here:

================  ===============  ==========================================================================
flag              ``args.``        meaning
================  ===============  ==========================================================================
``--config``      ``config``       a TOML (or YAML) file of options; flags on the command line override it
``--num-samples`` ``num_samples``  ``N``: a stratified subset of a dataset's split, or a file's first rows
``--batch-size``  ``batch_size``   samples per block of work (the tile and chunk edge of a store)
``--dtype``       ``dtype``        ``float32``, ``float64``, ``bfloat16``, ``float16`` (a name; see
                                   :func:`torch_dtype`)
``--device``      ``device``       ``auto``, ``cpu``, ``cuda``, ``cuda:1``, ``mps`` (see :func:`resolve_device`)
``--seed``        ``seed``         the model's initialisation
``--data-seed``   ``data_seed``    the draw of the data subset
``--memory``      ``memory``       a memory budget in bytes, read from ``4G``, ``4GB``, ``4GiB``, ``512M``
``--params``      ``params``       name patterns of the parameters to differentiate (``classifier.*``; the
                                   flag repeats); default: every trainable one (:data:`KERNEL_FLAGS`)
``--output``      ``output``       what of the model's output the kernel is of: a field (``logits``) or label
                                   words at a position (``3,7@-1``, see :func:`output_selection`)
================  ===============  ==========================================================================
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch

from ..kernels.outputs import LabelWords, parse_output
from ..tiling import parse_bytes

#: The floating types a subcommand may compute in, by the name ``--dtype`` takes.
DTYPES: dict[str, torch.dtype] = {
    "float32": torch.float32,
    "float64": torch.float64,
    "bfloat16": torch.bfloat16,
    "float16": torch.float16,
}

#: Every common flag, in the order ``--help`` lists them.
COMMON_FLAGS = ("num-samples", "batch-size", "dtype", "device", "seed", "data-seed", "memory")

#: The flags of subcommands that compute a network's kernel: which parameters and which outputs it is of.
#: Added with ``flags=COMMON_FLAGS + KERNEL_FLAGS``.
KERNEL_FLAGS = ("params", "output")


def _integer_from(text: str, low: int, what: str) -> int:
    """``text`` as an integer ``≥ low``, or an ``argparse`` error that names ``what`` was expected."""
    try:
        value = int(text)
    except ValueError:
        value = low - 1
    if value < low:
        raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}")
    return value


def positive_int(text: str) -> int:
    """An ``argparse`` type: an integer ``≥ 1``."""
    return _integer_from(text, 1, "a positive integer")


def seed(text: str) -> int:
    """An ``argparse`` type: a seed, an integer ``≥ 0``."""
    return _integer_from(text, 0, "a seed, an integer ≥ 0")


def memory_size(text: str) -> int:
    """An ``argparse`` type: a memory size in bytes, from ``4G``, ``4GB`` (decimal), ``4GiB`` (binary), ``512M``.

    The units are those of :func:`pntk.tiling.parse_bytes`.
    """
    try:
        return parse_bytes(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def output_selection(text: str) -> str | LabelWords:
    """An ``argparse`` type: what ``--output`` selects, a field (``logits``) or label words at a position
    (``3,7@-1``, ``logits:3,7@-1``) (:func:`pntk.kernels.outputs.parse_output`).

    Example:
        >>> output_selection("3,7@-1")
        LabelWords(ids=(3, 7), position=-1, field='logits')
    """
    try:
        return parse_output(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def torch_dtype(name: str | None) -> torch.dtype | None:
    """The ``torch.dtype`` that a ``--dtype`` name stands for; ``None`` stays ``None`` (the model's own).

    Raises:
        ValueError: an unknown name; the message lists the valid ones.

    Example:
        >>> torch_dtype("bfloat16"), torch_dtype(None)
        (torch.bfloat16, None)
    """
    if name is None:
        return None
    if name not in DTYPES:
        raise ValueError(f"unknown dtype {name!r}; valid dtypes are {', '.join(DTYPES)}")
    return DTYPES[name]


def resolve_device(name: str) -> torch.device:
    """The device that a ``--device`` value names, checked to exist on this machine.

    ``auto`` is ``cuda:LOCAL_RANK`` (``cuda:0`` outside torchrun) when CUDA is available, else ``cpu``.

    Raises:
        ValueError: a device type PyTorch does not know (``tpu``), or one this build or machine lacks (``cuda``
            on a CPU-only build, ``cuda:3`` on a machine with two GPUs); the message says what is available.

    Example:
        >>> resolve_device("cpu")
        device(type='cpu')
    """
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        return torch.device("cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ValueError(
            f"unknown device {name!r}; use cpu, cuda, cuda:N or mps, or auto (available here: {_available()})"
        ) from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            build = "this PyTorch build has no CUDA" if torch.version.cuda is None else "no CUDA GPU is visible"
            raise ValueError(
                f"--device {name}: {build}; use --device cpu, or install a CUDA build of PyTorch on a machine "
                f"with a GPU (available here: {_available()})"
            )
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ValueError(f"--device {name}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    elif device.type != "cpu":
        backend = getattr(torch.backends, device.type, None) or getattr(torch, device.type, None)
        is_available = getattr(backend, "is_available", None)
        if not (callable(is_available) and is_available()):
            raise ValueError(f"--device {name}: no {device.type} device is available (available here: {_available()})")
    return device


def _available() -> str:
    devices = ["cpu"]
    if torch.cuda.is_available():
        devices += [f"cuda:{i}" for i in range(torch.cuda.device_count())]
    if torch.backends.mps.is_available():
        devices.append("mps")
    return ", ".join(devices)


def _flag_definitions(defaults: Mapping[str, Any]) -> dict[str, Callable[[Any], None]]:
    """For each common flag, a function that adds it to a parser or group, with ``defaults`` applied."""

    def default(dest: str, fallback: Any) -> Any:
        return defaults.get(dest, fallback)

    def shown(dest: str, meaning_of_none: str) -> str:
        """How ``--help`` states a default: its value, or what leaving the flag out means."""
        return meaning_of_none if defaults.get(dest) is None else "%(default)s"

    return {
        "num-samples": lambda g: g.add_argument(
            "--num-samples",
            type=positive_int,
            metavar="N",
            default=default("num_samples", None),
            help="use N samples: a stratified subset of the dataset's split (drawn with --data-seed), or the "
            "first N rows of a file (default: " + shown("num_samples", "all") + ")",
        ),
        "batch-size": lambda g: g.add_argument(
            "--batch-size",
            type=positive_int,
            metavar="B",
            default=default("batch_size", None),
            help="samples per block of work; in a store, the tile (and chunk) edge (default: "
            + shown("batch_size", "planned from --memory")
            + ")",
        ),
        "dtype": lambda g: g.add_argument(
            "--dtype",
            choices=tuple(DTYPES),
            default=default("dtype", None),
            help="compute in this floating type (default: "
            + shown("dtype", "the model's")
            + "). A store holds NumPy numbers: NumPy has no bfloat16, so stores take float16 or float32 instead",
        ),
        "device": lambda g: g.add_argument(
            "--device",
            default=default("device", "auto"),
            help="cpu, cuda, cuda:1, mps, ... (default: %(default)s: cuda:LOCAL_RANK when CUDA is available, else cpu)",
        ),
        "seed": lambda g: g.add_argument(
            "--seed",
            type=seed,
            default=default("seed", 0),
            help="seed of the model's initialisation (zoo models; default: %(default)s)",
        ),
        "data-seed": lambda g: g.add_argument(
            "--data-seed",
            type=seed,
            default=default("data_seed", 0),
            help="seed of the subset --num-samples draws from a dataset (default: %(default)s)",
        ),
        "memory": lambda g: g.add_argument(
            "--memory",
            type=memory_size,
            metavar="SIZE",
            default=default("memory", None),
            help="memory budget: 4G = 4GB = 4·10⁹ bytes, 4GiB = 4·2³⁰ bytes, 512M, ... (default: "
            + shown("memory", "pntk's plan")
            + ")",
        ),
        "params": lambda g: g.add_argument(
            "--params",
            action="append",
            metavar="PATTERN",
            default=default("params", None),
            help="differentiate only the parameters whose names match PATTERN, shell-style ('classifier.*', "
            "'*.lora_*'); repeat for several (default: every trainable parameter)",
        ),
        "output": lambda g: g.add_argument(
            "--output",
            type=output_selection,
            metavar="SELECTION",
            default=default("output", None),
            help="the kernel of this part of the model's output: a field such as logits, or label words at a "
            "position, IDS@POSITION or FIELD:IDS@POSITION (3,7@-1: the logits of tokens 3 and 7 at the last "
            "position) (default: the output itself, [B, O])",
        ),
    }


def add_config_flag(parser: argparse.ArgumentParser | argparse._ArgumentGroup) -> None:
    """Add ``--config FILE``; :func:`pntk.cli.main` reads the file before the other flags (see
    :mod:`pntk.cli.config`)."""
    parser.add_argument(
        "--config",
        metavar="FILE",
        help="read options from a TOML file (or YAML, .yaml/.yml): keys are flag names "
        "(num-samples = 200); flags given on the command line override it",
    )


def add_common_flags(
    parser: argparse.ArgumentParser,
    *,
    flags: Sequence[str] = COMMON_FLAGS,
    defaults: Mapping[str, Any] | None = None,
) -> argparse._ArgumentGroup:
    """Add ``--config`` and the common ``flags`` to a subcommand's parser, in one group of its ``--help``.

    Args:
        parser: the subcommand's parser.
        flags: which of :data:`COMMON_FLAGS` the subcommand takes (``--config`` is always added).
        defaults: a subcommand's own defaults, by ``args.`` name (``{"dtype": "float64"}``).

    Returns:
        The argument group, for subcommand-specific flags that belong with them.

    Raises:
        ValueError: an unknown flag name, or a default for a flag not added.

    Example:
        >>> p = argparse.ArgumentParser(prog="pntk demo")
        >>> _ = add_common_flags(p, flags=("num-samples", "memory"), defaults={"num_samples": 64})
        >>> vars(p.parse_args(["--memory", "2GiB"]))
        {'config': None, 'num_samples': 64, 'memory': 2147483648}
    """
    defaults = dict(defaults or {})
    definitions = _flag_definitions(defaults)
    unknown = [f for f in flags if f not in definitions]
    if unknown:
        raise ValueError(f"unknown common flags {unknown}; valid ones are {', '.join(COMMON_FLAGS + KERNEL_FLAGS)}")
    stray = set(defaults) - {f.replace("-", "_") for f in flags}
    if stray:
        raise ValueError(f"defaults given for flags not added: {sorted(stray)}")
    group = parser.add_argument_group("common options (the same in every subcommand that computes)")
    add_config_flag(group)
    for name in COMMON_FLAGS + KERNEL_FLAGS:
        if name in flags:
            definitions[name](group)
    return group
