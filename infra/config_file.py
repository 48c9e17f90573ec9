"""``vectorizer --config FILE``: settings from a TOML file, below flags and environment variables.

Why a file: a deployment keeps its settings in one reviewed place instead of a long command
line, and the same file serves the connector, the workers and the operations commands. The file
only supplies *defaults*: click resolves every option as flag, then environment variable, then
this file, then the built-in default, so a flag or an env var set for one run still wins.

Layout (keys are option names, with dashes or underscores)::

    database-url = "postgresql://vectorizer@db/app"   # top level: every command that has it
    kafka-bootstrap-servers = "kafka:9092"

    [connector]                                       # a table per command: that command only
    partitions = 12
    metrics-port = 9100

    [worker]
    concurrency = 2
    embedding-timeout = 30

A top-level key goes to each command with an option of that name (``kafka-bootstrap-servers``
and ``bootstrap-servers`` name the same option where a command accepts both). A key that no
command has, a key a command's table cannot take, or a table that is not a command is an error
that names it, so a typo never silently falls back to a default.
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import click

from pgai_orm.errors import VectorizerError

__all__ = ["CONFIG_ENV", "ConfigFileError", "default_map"]

#: Environment variable naming the file (what ``--config`` reads when not given).
CONFIG_ENV = "VECTORIZER_CONFIG"


class ConfigFileError(VectorizerError, click.ClickException):
    """The configuration file cannot be read or names something that does not exist.

    A ``ClickException``, so the CLI prints it as one line; a ``VectorizerError`` like every
    error the project raises on purpose.
    """


def _key(name: str) -> str:
    return name.strip().lstrip("-").replace("_", "-").lower()


def _option_keys(command: click.Command) -> dict[str, str]:
    """Every name an option of ``command`` answers to -> its parameter name."""
    keys: dict[str, str] = {}
    for param in command.params:
        if not isinstance(param, click.Option) or param.hidden or param.name is None:
            continue
        for opt in (*param.opts, *param.secondary_opts, param.name):
            keys[_key(opt)] = param.name
    return keys


def default_map(path: Path, commands: Mapping[str, click.Command]) -> dict[str, dict[str, Any]]:
    """click's ``default_map`` for the ``vectorizer`` group from the TOML file at ``path``."""
    try:
        with path.open("rb") as handle:
            data = tomllib.load(handle)
    except OSError as exc:
        raise ConfigFileError(f"cannot read the configuration file {path}: {exc.strerror}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigFileError(f"{path} is not valid TOML: {exc}") from exc
    shared = {k: v for k, v in data.items() if not isinstance(v, dict)}
    tables = {k: v for k, v in data.items() if isinstance(v, dict)}
    for name in tables:
        if name not in commands:
            raise ConfigFileError(
                f"{path}: [{name}] is not a command; tables are named after the commands:"
                f" {', '.join(sorted(commands))}")
    result: dict[str, dict[str, Any]] = {}
    used: set[str] = set()
    for name, command in commands.items():
        keys = _option_keys(command)
        values: dict[str, Any] = {}
        for key, value in shared.items():
            param = keys.get(_key(key))
            if param is not None:
                values[param] = value
                used.add(key)
        for key, value in tables.get(name, {}).items():
            param = keys.get(_key(key))
            if param is None:
                options = sorted({_key(opt) for p in command.params if isinstance(p, click.Option)
                                  and not p.hidden for opt in p.opts if opt.startswith("--")})
                raise ConfigFileError(
                    f"{path}: [{name}] {key}: `vectorizer {name}` has no such option"
                    f" (it has: {', '.join(options)})")
            values[param] = value
        if values:
            result[name] = values
    unused = sorted(set(shared) - used)
    if unused:
        raise ConfigFileError(f"{path}: {', '.join(unused)}: no command has such an option")
    return result
