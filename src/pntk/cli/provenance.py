"""What a subcommand records about its own run, for a store's provenance: the command line, the config file's
flags, the working directory, the world size under torchrun and the versions."""

from __future__ import annotations

import argparse
import os
import platform
from pathlib import Path
from typing import Any

import torch


def run_record(args: argparse.Namespace) -> dict[str, Any]:
    """The record of this run of ``pntk``.

    Args:
        args: the parsed command line (:func:`pntk.cli.runner.parse_arguments` sets ``argv`` and
            ``config_flags``).

    Returns:
        JSON-ready: ``command`` (``["pntk", *argv]`` as typed), ``config`` (``None``, or the file's absolute
        path and the ``flags`` it stood for, which the command line's own flags override), ``cwd``,
        ``world_size`` (processes under torchrun) and ``versions`` (pntk, torch, Python).
    """
    from .. import __version__

    config = getattr(args, "config", None)
    return {
        "command": ["pntk", *getattr(args, "argv", [])],
        "config": None
        if config is None
        else {"path": str(Path(config).resolve()), "flags": list(getattr(args, "config_flags", []))},
        "cwd": os.getcwd(),
        "world_size": int(os.environ.get("WORLD_SIZE", "1")),
        "versions": {"pntk": __version__, "torch": torch.__version__, "python": platform.python_version()},
    }
