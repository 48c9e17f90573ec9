"""The ``vectorizer`` command: ``vectorizer dev up|down|status|env`` plus other packages' commands.

Other packages plug in by exposing a click command or group and being listed in
``PLUGIN_COMMANDS``. Every listed command must import: a broken plugin must not silently vanish
from the CLI. Commands import their heavy dependencies (faust, models) lazily where they can.
"""

from __future__ import annotations

import importlib
import sys
import time
from pathlib import Path

import click

from infra.config_file import CONFIG_ENV, default_map
from infra.errors import InfraError
from infra.stack import STATE_DIR_ENV, EmbeddedStack

#: ``module:attribute`` of click commands added under ``vectorizer``; add one line per package.
PLUGIN_COMMANDS: tuple[str, ...] = (
    "connector.cli:connector_command",
    "processors.cli:worker_command",
    "infra.ops.commands:status_command",
    "infra.ops.commands:errors_command",
    "infra.ops.commands:replay_command",
    "infra.ops.commands:pause_command",
    "infra.ops.commands:resume_command",
    "infra.demo:demo_command",
)


def _read_config(ctx: click.Context, param: click.Parameter, value: Path | None) -> None:
    """Load ``--config`` before the subcommand's options are resolved (they read its defaults)."""
    if value is not None:
        ctx.default_map = default_map(value, main.commands)


@click.group(name="vectorizer")
@click.option("--config", type=click.Path(dir_okay=False, path_type=Path), envvar=CONFIG_ENV,
              show_envvar=True, default=None, is_eager=True, expose_value=False,
              callback=_read_config,
              help="TOML file of settings: top-level keys for every command, a [connector],"
              " [worker], ... table for one. Flags and environment variables win over it.")
def main() -> None:
    """Streaming embeddings for PostgreSQL: logical replication -> Kafka -> processors -> pgvector."""


@main.group(name="dev")
@click.option("--state-dir", type=click.Path(file_okay=False, path_type=Path), envvar=STATE_DIR_ENV,
              show_envvar=True, default=None, help="Where the stack keeps its data (default: ./.state).")
@click.pass_context
def dev(ctx: click.Context, state_dir: Path | None) -> None:
    """The embedded dev stack: PostgreSQL 18 + pgvector and a Tansu Kafka broker on 127.0.0.1.

    Dev defaults only: the `postgres` superuser has no password (trust auth on 127.0.0.1),
    fsync is off, and the broker keeps topics in memory (lost on `down`).
    """
    ctx.obj = state_dir


def _subcommand_state_dir(ctx: click.Context, param: click.Parameter, value: Path | None) -> None:
    if value is not None:
        ctx.obj = value


#: ``--state-dir`` after the subcommand too (``vectorizer dev up --state-dir X``), the way the
#: operator commands take it; before it (``vectorizer dev --state-dir X up``) still works.
_state_dir_after = click.option(
    "--state-dir", type=click.Path(file_okay=False, path_type=Path), default=None,
    expose_value=False, callback=_subcommand_state_dir,
    help="Where the stack keeps its data (same as `vectorizer dev --state-dir`).")


def _fail(exc: InfraError) -> None:
    raise click.ClickException(f"{type(exc).__name__}: {exc}") from exc


def _stack(ctx: click.Context, pg_port: int | None = None,
           kafka_port: int | None = None) -> EmbeddedStack:
    try:
        return EmbeddedStack(ctx.obj, pg_port=pg_port, kafka_port=kafka_port)
    except InfraError as exc:
        _fail(exc)
        raise  # unreachable: _fail raises


@dev.command()
@click.option("--pg-port", type=int, default=None,
              help="PostgreSQL port; fails if taken (default: the last one if free, else any free one).")
@click.option("--kafka-port", type=int, default=None,
              help="Broker port; fails if taken (default: the last one if free, else any free one).")
@_state_dir_after
@click.pass_context
def up(ctx: click.Context, pg_port: int | None, kafka_port: int | None) -> None:
    """Start PostgreSQL and the broker (reuses a stack that already runs)."""
    started = time.monotonic()
    try:
        info = _stack(ctx, pg_port=pg_port, kafka_port=kafka_port).up()
    except InfraError as exc:
        _fail(exc)
        return
    click.echo(f"stack up in {time.monotonic() - started:.2f}s", err=True)
    for key, value in info.env().items():
        click.echo(f"{key}={value}")


@dev.command()
@_state_dir_after
@click.pass_context
def down(ctx: click.Context) -> None:
    """Drop the cluster's logical replication slots and stop both services."""
    try:
        dropped = _stack(ctx).down()
    except InfraError as exc:
        _fail(exc)
        return
    if dropped:
        click.echo(f"dropped replication slots: {', '.join(dropped)}")
    click.echo("stack stopped")


@dev.command()
@_state_dir_after
@click.pass_context
def status(ctx: click.Context) -> None:
    """Show what runs; exit status 1 when a service is down."""
    services = _stack(ctx).status()
    for svc in services:
        state = f"running pid={svc.pid} {svc.address}" if svc.running else "stopped"
        click.echo(f"{svc.name}: {state}")
    if not all(svc.running for svc in services):
        sys.exit(1)


@dev.command()
@_state_dir_after
@click.pass_context
def env(ctx: click.Context) -> None:
    """Print KEY=value lines for the running stack: use `export $(vectorizer dev env)`."""
    stack = _stack(ctx)
    if not stack.is_running():
        raise click.ClickException("the dev stack is not running: start it with `vectorizer dev up`")
    for key, value in stack.info().env().items():
        click.echo(f"{key}={value}")


#: The extra (pyproject.toml) that installs what a plugin module imports beyond the base.
PLUGIN_EXTRAS = {"connector.cli": "connector", "processors.cli": "worker",
                 "infra.ops.commands": "pipeline", "infra.demo": "demo"}
_OUR_PACKAGES = ("connector", "processors", "pgai_orm", "infra")


def _missing_extra_command(name: str, extra: str, missing: str) -> click.Command:
    """Stands in for a command whose optional dependencies are not installed: it says which
    extra installs them (a plugin never vanishes silently)."""

    @click.command(name=name, context_settings={"ignore_unknown_options": True},
                   add_help_option=False, help=f"(needs: pip install 'pg-stream-vectorizer[{extra}]')")
    @click.argument("args", nargs=-1, type=click.UNPROCESSED)
    def unavailable(args: tuple[str, ...]) -> None:
        raise click.ClickException(
            f"`vectorizer {name}` needs the '{extra}' extra ({missing} is not installed):"
            f" pip install 'pg-stream-vectorizer[{extra}]'")

    return unavailable


def _load_plugins() -> None:
    for spec in PLUGIN_COMMANDS:
        module_name, attr = spec.split(":")
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            missing = (exc.name or "").split(".")[0]
            if missing in _OUR_PACKAGES or module_name not in PLUGIN_EXTRAS:
                raise  # a broken plugin, not a missing extra: fail loudly
            name = attr.removesuffix("_command").replace("_", "-")
            main.add_command(_missing_extra_command(name, PLUGIN_EXTRAS[module_name], missing))
            continue
        main.add_command(getattr(module, attr))


_load_plugins()
