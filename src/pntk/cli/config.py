"""``--config file.toml``: options from a file, turned into flags placed before the command line's own.

A config file maps flag names (without ``--``; ``num-samples`` or ``num_samples``) to values. Top-level keys
apply to the subcommand being run, and a table named after a subcommand (``[compute]``) applies to it alone,
over the top-level keys; tables of other subcommands are ignored, so one file can serve several::

    model = "mlp"
    width = 64
    dataset = "digits"
    num-samples = 200
    memory = "4G"

    [compute]
    kind = "pntk"
    out = "k.zarr"

Each value becomes the flag it names (``true`` for a switch such as ``overwrite``; a list for a flag that takes
several values, or a comma-separated one such as ``--widths``), checked as the command line would check it,
and placed before the command line's flags: a flag given on the command line wins. TOML is read with the
standard library (``tomllib``, or ``tomli`` before Python 3.11); YAML (``.yaml``/``.yml``) needs PyYAML.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

#: Flags a config file cannot set.
_NOT_CONFIGURABLE = {"config", "help"}


class ConfigError(ValueError):
    """A config file that cannot be read, or whose keys or values the subcommand does not accept."""


def load_config(path: str | Path) -> dict[str, Any]:
    """The mapping a TOML (or YAML) file holds.

    Raises:
        ConfigError: no such file, a syntax error (with its line), YAML without PyYAML, or not a mapping.
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"no config file {path}")
    text = path.read_text(encoding="utf-8")
    if path.suffix.lower() in (".yaml", ".yml"):
        try:
            import yaml
        except ImportError:
            raise ConfigError(f"{path}: reading YAML needs PyYAML (pip install pyyaml); or write TOML") from None
        try:
            values = yaml.safe_load(text)
        except yaml.YAMLError as err:
            raise ConfigError(f"{path} is not valid YAML: {err}") from None
    else:
        if sys.version_info >= (3, 11):
            import tomllib
        else:  # pragma: no cover - Python 3.10
            import tomli as tomllib
        try:
            values = tomllib.loads(text)
        except tomllib.TOMLDecodeError as err:
            raise ConfigError(f"{path} is not valid TOML: {err}") from None
    if values is None:
        return {}
    if not isinstance(values, dict):
        raise ConfigError(f"{path} must hold a mapping of flag names to values, not a {type(values).__name__}")
    return values


def config_arguments(
    parser: argparse.ArgumentParser, command: str, commands: set[str], values: Mapping[str, Any], path: str | Path
) -> list[str]:
    """The flags that ``values`` (a loaded config file) stand for in the subcommand ``command``.

    Args:
        parser: the subcommand's parser.
        command: its name, whose table (``[command]``) applies over the top-level keys.
        commands: the names of every subcommand, whose tables are not keys.
        values: the file's mapping.
        path: the file, for messages.

    Returns:
        Command-line tokens, e.g. ``["--num-samples", "200", "--overwrite"]``.

    Raises:
        ConfigError: a key the subcommand has no flag for (the message lists the valid keys), or a value the
            flag does not accept.

    Example:
        >>> p = argparse.ArgumentParser()
        >>> _ = p.add_argument("--num-samples", type=int); _ = p.add_argument("--overwrite", action="store_true")
        >>> config_arguments(p, "compute", {"compute"}, {"num_samples": 200, "compute": {"overwrite": True}}, "c.toml")
        ['--num-samples', '200', '--overwrite']
    """
    options = {}
    for action in parser._actions:
        for option in action.option_strings:
            if option.startswith("--") and action.dest not in _NOT_CONFIGURABLE:
                options[option[2:]] = (option, action)
    merged = {k: v for k, v in values.items() if k not in commands}
    section = values.get(command, {})
    if not isinstance(section, Mapping):
        raise ConfigError(f"{path}: [{command}] must be a table of flag names to values")
    merged.update(section)
    tokens: list[str] = []
    for key, value in merged.items():
        name = str(key).replace("_", "-")
        if name not in options:
            valid = ", ".join(sorted({o[2:] for o, a in options.values() if not o.startswith("--no-")}))
            raise ConfigError(
                f"{path}: pntk {command} has no option {key!r}; valid keys are {valid} (put options of one "
                f"subcommand in its own [{command}] table)"
            )
        option, action = options[name]
        tokens += _tokens(option, action, value, f"{path}: {key} = {value!r}")
    return tokens


def _tokens(option: str, action: argparse.Action, value: Any, where: str) -> list[str]:
    if value is None:
        return []
    if action.nargs == 0:  # a switch: store_true, store_false, BooleanOptionalAction
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: {option} is a switch; write true or false")
        if isinstance(action, argparse.BooleanOptionalAction):
            return [option if value else "--no-" + option[2:]]
        return [option] if value == action.const else []  # store_true's const is True, store_false's False
    if isinstance(value, (list, tuple)):
        if action.nargs in ("+", "*") or isinstance(action.nargs, int):
            texts = [_text(v, where) for v in value]
            for text in texts:
                _check(action, text, where)
            return [option, *texts]
        value = ",".join(_text(v, where) for v in value)
    text = _text(value, where)
    _check(action, text, where)
    return [option, text]


def _text(value: Any, where: str) -> str:
    if isinstance(value, (dict, list, tuple)):
        raise ConfigError(f"{where}: expected a single value, not a {type(value).__name__}")
    if isinstance(value, bool):
        raise ConfigError(f"{where}: expected a value, not a switch (true/false)")
    return str(value)


def _check(action: argparse.Action, text: str, where: str) -> None:
    """Check ``text`` as argparse would, so that the message can name the file and the key."""
    value: Any = text
    if callable(action.type):
        try:
            value = action.type(text)
        except (argparse.ArgumentTypeError, TypeError, ValueError) as err:
            raise ConfigError(f"{where}: {err}") from None
    if action.choices is not None and value not in action.choices:
        valid = ", ".join(map(str, action.choices))
        raise ConfigError(f"{where}: invalid choice; valid ones are {valid}")
