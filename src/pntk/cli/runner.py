"""How a ``pntk`` command line is read and run: ``--config`` files, a subcommand's own usage on a bad flag,
and every failure reported as one message and an exit status, never as a raw traceback.

Exit statuses:

=====  ======================================================================================================
0      success
1      an unexpected error (a bug in pntk, or an error raised inside the user's model): its type and message;
       ``PNTK_TRACEBACK=1`` shows the traceback
2      bad usage (an unknown flag or value: the subcommand's usage, by ``SystemExit(2)`` as argparse does) or
       bad input (a missing file, a refused pickle, a store of another computation, ...): a message that says
       what was wrong and what to do
3      another process is writing to the store
130    interrupted (Ctrl-C)
141    the reader of the output went away (``pntk info k.zarr | head``): the rest is dropped silently
=====  ======================================================================================================
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from ..store import StoreLockedError
from .config import ConfigError, config_arguments, load_config

EXIT_ERROR, EXIT_USAGE, EXIT_LOCKED, EXIT_INTERRUPTED, EXIT_BROKEN_PIPE = 1, 2, 3, 130, 141

#: Set this environment variable (to anything but ``0`` or nothing) to see the traceback of a failure.
TRACEBACK_VARIABLE = "PNTK_TRACEBACK"


def parse_arguments(parser: argparse.ArgumentParser, argv: list[str]) -> argparse.Namespace:
    """Parse ``argv`` with the ``pntk`` parser, the subcommand's ``--config`` file first.

    The config file's options become flags placed right after the subcommand's name, before the flags of
    ``argv``, which therefore override them (see :mod:`pntk.cli.config`). The namespace gets ``argv`` (as
    given) and ``config_flags`` (the flags the config file stood for, ``[]`` without one).

    Raises:
        SystemExit: with status 2, after the usage of the subcommand (for its unknown or invalid flags and a
            bad config file) or of ``pntk`` (for a missing or unknown subcommand) and the error, as argparse
            does.
    """
    subparsers = _subparsers(parser)
    position = next((i for i, token in enumerate(argv) if not token.startswith("-")), None)
    config_flags: list[str] = []
    if position is not None and argv[position] in subparsers:
        name = argv[position]
        sub = subparsers[name]
        path = _config_path(argv[position + 1 :])
        if path is not None:
            try:
                config_flags = config_arguments(sub, name, set(subparsers), load_config(path), path)
            except ConfigError as err:
                sub.error(str(err))
    expanded = argv if position is None else [*argv[: position + 1], *config_flags, *argv[position + 1 :]]
    args, extra = parser.parse_known_args(expanded)
    if extra:
        subparsers.get(getattr(args, "command", ""), parser).error("unrecognized arguments: " + " ".join(extra))
    args.argv, args.config_flags = list(argv), config_flags
    return args


def run_command(parser: argparse.ArgumentParser, argv: list[str]) -> int:
    """Parse ``argv`` and run the chosen subcommand (``args.run(args)``); report any failure as one message.

    Returns:
        The exit status (see this module's table).

    Raises:
        SystemExit: status 2 for bad usage, as :func:`parse_arguments`; status 0 after ``--help``.
    """
    args = parse_arguments(parser, argv)
    prog = f"{parser.prog} {args.command}"
    try:
        status = int(args.run(args) or 0)
        sys.stdout.flush()  # a reader that went away shows here rather than at exit
        return status
    except BrokenPipeError:
        _drop_stdout()
        return EXIT_BROKEN_PIPE
    except KeyboardInterrupt:
        hint = getattr(args, "on_interrupt", None)
        _report(prog, "interrupted" + (f"; {hint}" if hint else ""))
        return EXIT_INTERRUPTED
    except Exception as err:
        if os.environ.get(TRACEBACK_VARIABLE, "0") not in ("", "0"):
            raise
        if isinstance(err, StoreLockedError):
            _report(prog, str(err))
            return EXIT_LOCKED
        if isinstance(err, (ValueError, OSError)):
            # pntk's own errors and the checks of user input: the message says what to do.
            _report(prog, str(err) or type(err).__name__)
            return EXIT_USAGE
        _report(
            prog,
            f"{type(err).__name__}: {err}\n(unexpected: rerun with {TRACEBACK_VARIABLE}=1 to see where it was "
            "raised; if that is inside pntk, please report it with the traceback)",
        )
        return EXIT_ERROR


def _report(prog: str, message: str) -> None:
    print(f"{prog}: error: {message}", file=sys.stderr)


def _drop_stdout() -> None:
    """Point stdout at /dev/null, so that the interpreter's last flush does not fail on the closed pipe."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError, AttributeError):  # stdout is not a file (captured, replaced)
        pass


def _subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def _config_path(tokens: list[str]) -> str | None:
    """The value of the last ``--config FILE`` or ``--config=FILE`` among ``tokens``."""
    path = None
    for i, token in enumerate(tokens):
        if token == "--":
            break
        if token == "--config" and i + 1 < len(tokens):
            path = tokens[i + 1]
        elif token.startswith("--config="):
            path = token.partition("=")[2]
    return None if path is None else str(Path(path))
