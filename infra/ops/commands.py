"""The click commands ``vectorizer status``, ``vectorizer errors``, ``vectorizer replay`` and
``vectorizer pause`` / ``vectorizer resume``.

Each takes ``--database-url`` (``$DATABASE_URL``), falling back to the running embedded dev
stack; an unreachable database is a one-line error with the password hidden.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Iterator
from dataclasses import asdict
from pathlib import Path
from typing import Any

import click
import psycopg

from infra.ops.render import error_json, jsonable, render_errors, render_report
from infra.ops.replay import start_replay, wait_for_activation
from infra.ops.report import add_consumer_lags, read_report
from infra.services import recorded_database
from infra.stack import STATE_DIR_ENV, EmbeddedStack
from infra.urls import libpq_url, with_database
from pgai_orm.catalog import catalog_exists
from pgai_orm.catalog.progress import pause_vectorizer, resume_vectorizer
from pgai_orm.catalog.report import NoCatalogError, UnknownVectorizerError, read_errors
from pgai_orm.runtime.failures import DATABASE_HINT
from pgai_orm.runtime.logs import scrub
from pgai_orm.runtime.options import database_url_option, kafka_option, option
from pgai_orm.runtime.urls import describe_database

__all__ = ["errors_command", "pause_command", "replay_command", "resume_command",
           "status_command"]


def _resolve_database_url(database_url: str | None, state_dir: Path | None) -> str:
    """``--database-url``/``$DATABASE_URL``, else the running embedded dev stack's database:
    the one a recorded run there serves (the demo's ``vectorizer_demo``), else ``postgres``."""
    if database_url:
        return database_url
    stack = EmbeddedStack(state_dir)
    if not stack.is_running():
        where = f" in {state_dir}" if state_dir is not None else ""
        raise click.ClickException(
            f"no database: pass --database-url, set DATABASE_URL, or start the dev stack{where}"
            " (`vectorizer dev up`, or `vectorizer demo --keep-running`)")
    url = stack.info().database_url
    name = recorded_database(stack.state_dir)
    return with_database(url, name) if name else url


@contextlib.contextmanager
def _database_errors(url: str) -> Iterator[None]:
    """An unreachable database is a one-line error naming it (password hidden), not a traceback;
    a vectorizer or catalog that does not exist is a one-line error too."""
    try:
        yield
    except psycopg.OperationalError as exc:
        reason = " ".join(str(exc).split())
        raise click.ClickException(f"cannot reach the database {describe_database(url)}"
                                   f" ({scrub(reason)}): {DATABASE_HINT}") from None
    except (NoCatalogError, UnknownVectorizerError) as exc:
        raise click.ClickException(str(exc)) from None


def _database_options(func: Any) -> Any:
    func = option("--state-dir", type=click.Path(file_okay=False, path_type=Path),
                  envvar=STATE_DIR_ENV, default=None,
                  help="Dev stack to ask when no database URL is given (default ./.state).")(func)
    return database_url_option(
        required=False, help="PostgreSQL URL of the database holding the vectorizers"
        " (postgresql://... or postgresql+psycopg://...; default: the running dev stack's).")(func)


@click.command(name="status")
@_database_options
@kafka_option(required=False, help="Broker, to measure consumer lag (default: the dev stack's).")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object instead of tables.")
def status_command(database_url: str | None, state_dir: Path | None, bootstrap_servers: str | None,
                   as_json: bool) -> None:
    """Per vectorizer: source rows, chunks stored, pending work (slot and consumer lag), errors."""
    url = _resolve_database_url(database_url, state_dir)
    if bootstrap_servers is None and not database_url:
        stack = EmbeddedStack(state_dir)
        bootstrap_servers = stack.info().kafka_bootstrap_servers if stack.is_running() else None
    with _database_errors(url):
        report = read_report(url)
    if bootstrap_servers:
        add_consumer_lags(report, bootstrap_servers)
    if as_json:
        click.echo(json.dumps(asdict(report), indent=2, default=jsonable))
    else:
        click.echo(render_report(report))


@click.command(name="errors")
@click.argument("name", required=False)
@_database_options
@click.option("--limit", type=click.IntRange(min=1), default=50, show_default=True,
              help="Newest errors to show.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON lines instead of a table.")
def errors_command(name: str | None, database_url: str | None, state_dir: Path | None, limit: int,
                   as_json: bool) -> None:
    """List the rows the pipeline could not embed (newest first), of all vectorizers or NAME."""
    url = _resolve_database_url(database_url, state_dir)
    with _database_errors(url), psycopg.connect(libpq_url(url), autocommit=True) as conn:
        rows = read_errors(conn, name, limit)
    if as_json:
        for row in rows:
            click.echo(json.dumps(error_json(row)))
        return
    if not rows:
        click.echo("no errors recorded")
        return
    click.echo(render_errors(rows))


@click.command(name="replay")
@click.argument("name")
@_database_options
@click.option("--wait/--no-wait", default=False,
              help="Wait until the workers caught up and the new version serves queries.")
@click.option("--timeout", type=float, default=600.0, show_default=True,
              help="Seconds to wait with --wait.")
def replay_command(name: str, database_url: str | None, state_dir: Path | None, wait: bool,
                   timeout: float) -> None:
    """Re-embed vectorizer NAME from its Kafka topic into a fresh store, then switch to it.

    The source table is not read; the current store keeps serving queries until the switch.
    """
    url = _resolve_database_url(database_url, state_dir)
    with _database_errors(url):
        started = start_replay(url, name)
    click.echo(f"vectorizer {name}: version {started.version} (same config as version "
               f"{started.from_version}) is building into {started.store}; running workers "
               "replay the topic from the start and switch queries to it once caught up.")
    if not wait:
        click.echo("follow it with `vectorizer status`")
        return
    begun = time.monotonic()
    if not wait_for_activation(url, name, started.version, timeout):
        raise click.ClickException(
            f"version {started.version} did not catch up within {timeout:.0f}s "
            "(are `vectorizer connector` and `vectorizer worker` running?)")
    click.echo(f"version {started.version} serves queries now ({time.monotonic() - begun:.1f}s)")


def _set_paused(name: str, database_url: str | None, state_dir: Path | None, pause: bool) -> None:
    url = _resolve_database_url(database_url, state_dir)
    with _database_errors(url), psycopg.connect(libpq_url(url), autocommit=True) as conn:
        if not catalog_exists(conn):
            raise NoCatalogError()
        (pause_vectorizer if pause else resume_vectorizer)(conn, name)


@click.command(name="pause")
@click.argument("name")
@_database_options
def pause_command(name: str, database_url: str | None, state_dir: Path | None) -> None:
    """Pause vectorizer NAME: nothing is embedded until `vectorizer resume NAME`.

    Its changes wait in Kafka and the replication slot keeps advancing (pgai:
    ai.disable_vectorizer_schedule; SQL: vectorizer.disable_vectorizer(name))."""
    _set_paused(name, database_url, state_dir, pause=True)
    click.echo(f"vectorizer {name} is paused: the workers stop embedding it at their next catalog"
               f" poll; its changes wait in Kafka until `vectorizer resume {name}`")


@click.command(name="resume")
@click.argument("name")
@_database_options
def resume_command(name: str, database_url: str | None, state_dir: Path | None) -> None:
    """Resume vectorizer NAME: the workers embed what waited in Kafka, then go on streaming.

    (pgai: ai.enable_vectorizer_schedule; SQL: vectorizer.enable_vectorizer(name))."""
    _set_paused(name, database_url, state_dir, pause=False)
    click.echo(f"vectorizer {name} is running: the workers catch up from where they stopped at"
               " their next catalog poll (follow it with `vectorizer status`)")
