"""The command-line naming scheme shared by ``vectorizer connector``, ``worker`` and the operator
commands, as click options that each command applies.

The scheme (``tests/unit/test_cli_scheme.py`` checks every command against it):

* flags are ``--kebab-case`` words; the two shared connections are ``--database-url``
  (``DATABASE_URL``, either the libpq or SQLAlchemy's form: :mod:`pgai_orm.runtime.urls`) and
  ``--kafka-bootstrap-servers`` (``KAFKA_BOOTSTRAP_SERVERS``);
* logging is ``--log-level`` (a level name, any case) and ``--log-format``
  (``VECTORIZER_LOG_FORMAT``);
* a duration is given in seconds (a float), and its flag names what it is, with no unit suffix
  (``--poll-interval``, ``--session-timeout``);
* the metrics port is ``--metrics-port`` (``VECTORIZER_<COMMAND>_METRICS_PORT``);
* every other environment variable is ``VECTORIZER_<FLAG>``; every option that reads one shows
  it in ``--help`` (click's ``show_envvar``);
* an old spelling stays accepted as a hidden alias (:class:`Option` ``hidden_aliases``), so
  existing deployments keep working while ``--help`` and the docs show one name.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import click

from pgai_orm.runtime.logs import LOG_FORMATS
from pgai_orm.runtime.urls import DatabaseUrlError, to_conninfo

__all__ = ["DATABASE_URL_ENV", "KAFKA_ENV", "LOG_FORMAT_ENV", "LOG_LEVELS", "Option",
           "database_url_option", "kafka_option", "log_format_option", "log_level_option",
           "metrics_port_option", "option"]

F = TypeVar("F", bound=Callable[..., Any])

DATABASE_URL_ENV = "DATABASE_URL"
KAFKA_ENV = "KAFKA_BOOTSTRAP_SERVERS"
LOG_FORMAT_ENV = "VECTORIZER_LOG_FORMAT"
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")


class Option(click.Option):
    """A click option whose ``hidden_aliases`` parse like its other names but stay out of
    ``--help`` (old spellings kept for existing deployments)."""

    def __init__(self, param_decls: Sequence[str], *, hidden_aliases: Sequence[str] = (),
                 **kwargs: Any) -> None:
        super().__init__(list(param_decls), **kwargs)
        self.hidden_aliases = tuple(hidden_aliases)
        unknown = set(self.hidden_aliases) - set(self.opts) - set(self.secondary_opts)
        if unknown:
            raise ValueError(f"hidden aliases {sorted(unknown)} are not names of {self.name}")

    @property
    def visible_opts(self) -> list[str]:
        return [o for o in self.opts if o not in self.hidden_aliases]

    def get_help_record(self, ctx: click.Context) -> tuple[str, str] | None:
        opts = self.opts
        self.opts = self.visible_opts
        try:
            return super().get_help_record(ctx)
        finally:
            self.opts = opts


def option(*param_decls: str, **kwargs: Any) -> Callable[[F], F]:
    """``click.option`` with :class:`Option` (``hidden_aliases=...``) and ``show_envvar`` on."""
    kwargs.setdefault("cls", Option)
    if kwargs.get("envvar"):
        kwargs.setdefault("show_envvar", True)
    return click.option(*param_decls, **kwargs)


def _conninfo(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    if value is None:
        return None
    try:
        return to_conninfo(value)
    except DatabaseUrlError as exc:
        raise click.BadParameter(str(exc), ctx=ctx, param=param) from None


def database_url_option(*, required: bool = True, help: str | None = None) -> Callable[[F], F]:  # noqa: A002 - click's word
    """``--database-url`` / ``DATABASE_URL``, handed to the command as a libpq conninfo."""
    return option(
        "--database-url", envvar=DATABASE_URL_ENV, required=required, default=None,
        callback=_conninfo,
        help=help or "PostgreSQL URL of the database holding the vectorizers: postgresql://..."
        " (SQLAlchemy's postgresql+psycopg://... works too).")


def kafka_option(*, required: bool = True, help: str | None = None,  # noqa: A002 - click's word
                 hidden_aliases: Sequence[str] = ()) -> Callable[[F], F]:
    """``--kafka-bootstrap-servers`` / ``KAFKA_BOOTSTRAP_SERVERS`` (parameter ``bootstrap_servers``)."""
    return option(
        "--kafka-bootstrap-servers", *hidden_aliases, "bootstrap_servers", envvar=KAFKA_ENV,
        required=required, default=None, hidden_aliases=hidden_aliases,
        help=help or "Kafka bootstrap servers, host:port[,host:port...].")


def log_level_option(*, default: str = "INFO",
                     hidden_aliases: Sequence[str] = ()) -> Callable[[F], F]:
    """``--log-level``: a level name in any case, handed over upper-case."""
    return option(
        "--log-level", *hidden_aliases, "log_level", default=default, show_default=True,
        type=click.Choice(LOG_LEVELS, case_sensitive=False), hidden_aliases=hidden_aliases,
        callback=lambda ctx, param, value: str(value).upper(),
        help="Python logging level.")


def log_format_option() -> Callable[[F], F]:
    """``--log-format`` / ``VECTORIZER_LOG_FORMAT``: ``text`` lines or one JSON object a line."""
    return option(
        "--log-format", envvar=LOG_FORMAT_ENV, type=click.Choice(LOG_FORMATS), default="text",
        show_default=True, help="text lines, or one JSON object per line.")


def metrics_port_option(command: str) -> Callable[[F], F]:
    """``--metrics-port`` / ``VECTORIZER_<COMMAND>_METRICS_PORT``; unset or 0: no endpoint."""
    return option(
        "--metrics-port", envvar=f"VECTORIZER_{command.upper()}_METRICS_PORT",
        type=click.IntRange(min=0), default=None,
        help="Serve Prometheus metrics on this port (0 or unset: off).")
