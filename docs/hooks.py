"""MkDocs hook: the command-line page shows the ``--help`` of every ``pntk`` subcommand, taken from the parser
itself so that the page cannot fall behind the code."""

from __future__ import annotations

import argparse
import os

MARKER = "<!-- pntk-cli-help -->"


def _subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    raise RuntimeError("the pntk parser has no subcommands")


def cli_reference() -> str:
    """Markdown: the top-level usage, then one section per subcommand with its help text."""
    os.environ["COLUMNS"] = "100"  # argparse wraps help text at the terminal width
    from pntk.cli import build_parser

    parser = build_parser()
    parser.prog = "pntk"
    parts = ["```text", parser.format_help().rstrip(), "```"]
    for name, sub in _subcommands(parser).items():
        parts += ["", f"## pntk {name}", "", "```text", sub.format_help().rstrip(), "```"]
    return "\n".join(parts)


def on_page_markdown(markdown: str, page, config, files) -> str:
    if MARKER in markdown:
        return markdown.replace(MARKER, cli_reference())
    return markdown
