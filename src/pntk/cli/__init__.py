"""The ``pntk`` command. Each subcommand lives in its own module with ``register(subparsers)``."""

from __future__ import annotations

import argparse
import importlib
import sys

from .runner import run_command

#: Modules of ``pntk.cli`` that define subcommands, in the order ``pntk --help`` lists them.
SUBCOMMANDS = ("compute", "info", "verify", "sweep", "reproduce", "eig", "regress", "features")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pntk", description="Empirical neural tangent kernels and the pseudo-NTK of PyTorch models."
    )
    from .. import __version__

    parser.add_argument("--version", action="version", version=f"pntk {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in SUBCOMMANDS:
        importlib.import_module(f"{__name__}.{name}").register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point: parse ``argv`` and run the chosen subcommand (its ``run(args)``), returning its exit status.

    A failure is one message on stderr and a non-zero status (see :mod:`pntk.cli.runner`), never a traceback.
    """
    return run_command(build_parser(), sys.argv[1:] if argv is None else list(argv))
