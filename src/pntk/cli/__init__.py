"""The ``pntk`` command. Each subcommand lives in its own module with ``register(subparsers)``."""

from __future__ import annotations

import argparse
import importlib
import sys

#: Modules of ``pntk.cli`` that define subcommands, in the order ``pntk --help`` lists them.
SUBCOMMANDS = ("compute", "info", "sweep", "reproduce", "features")


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
    """Entry point: parse ``argv`` and run the chosen subcommand (its ``run(args)``), returning its status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.run(args) or 0)
    except (ValueError, FileNotFoundError, FileExistsError) as err:
        print(f"pntk {args.command}: error: {err}", file=sys.stderr)
        return 2
