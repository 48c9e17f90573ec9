"""The ``vectorizer`` command: ``vectorizer dev up|down|status|env`` plus other packages' commands.

Other packages plug in by exposing a click command or group and being listed in
``PLUGIN_COMMANDS``. A plugin is imported when its command is used (or listed, by ``--help``):
``vectorizer worker`` loads the worker's module and nothing of the connector, the demo or the
operator commands, so the worker process holds only what it runs and starts without paying for
the others. Every listed command must import: a broken plugin fails loudly when it is used or
listed, and one whose optional extra is missing says which extra to install. ``--config`` maps a
file's tables onto every command's options, so it loads them all.
"""

from __future__ import annotations

import importlib
import sys
import time
from collections.abc import MutableMapping
from pathlib import Path

import click

from infra.config_file import CONFIG_ENV, default_map
from infra.errors import InfraError
from infra.stack import STATE_DIR_ENV, EmbeddedStack
from pgai_orm.errors import InvariantError

#: Command name -> ``module:attribute`` of the click command added under ``vectorizer``; add one
#: line per command.
PLUGIN_COMMANDS: dict[str, str] = {
    "connector": "connector.cli:connector_command",
    "worker": "processors.cli:worker_command",
    "status": "infra.ops.commands:status_command",
    "errors": "infra.ops.commands:errors_command",
    "replay": "infra.ops.commands:replay_command",
    "pause": "infra.ops.commands:pause_command",
    "resume": "infra.ops.commands:resume_command",
    "demo": "infra.demo:demo_command",
}
#: The extra (pyproject.toml) that installs what a plugin module imports beyond the base.
PLUGIN_EXTRAS = {"connector.cli": "connector", "processors.cli": "worker",
                 "infra.ops.commands": "pipeline", "infra.demo": "demo"}
_OUR_PACKAGES = ("connector", "processors", "pgai_orm", "infra")


class PluginGroup(click.Group):
    """A click group whose plugin commands are imported on first use (``PLUGIN_COMMANDS``)."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*self.commands, *PLUGIN_COMMANDS})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in self.commands and cmd_name in PLUGIN_COMMANDS:
            self.add_command(_load_plugin(cmd_name, PLUGIN_COMMANDS[cmd_name]))
        return self.commands.get(cmd_name)

    def load_all(self) -> MutableMapping[str, click.Command]:
        """Every command, plugins imported (``--config`` and tests need them all)."""
        for name in PLUGIN_COMMANDS:
            self.get_command(click.Context(self), name)
        return self.commands


def _read_config(ctx: click.Context, param: click.Parameter, value: Path | None) -> None:
    """Load ``--config`` before the subcommand's options are resolved (they read its defaults)."""
    if value is not None:
        ctx.default_map = default_map(value, main.load_all())


@click.group(name="vectorizer", cls=PluginGroup)
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


def _load_plugin(name: str, spec: str) -> click.Command:
    """Import one plugin's command, or a stand-in naming the extra that is not installed."""
    module_name, attr = spec.split(":")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        missing = (exc.name or "").split(".")[0]
        if missing in _OUR_PACKAGES or module_name not in PLUGIN_EXTRAS:
            raise  # a broken plugin, not a missing extra: fail loudly
        return _missing_extra_command(name, PLUGIN_EXTRAS[module_name], missing)
    command: click.Command = getattr(module, attr)
    if command.name != name:
        raise InvariantError(f"PLUGIN_COMMANDS[{name!r}] is `vectorizer {command.name}` ({spec})")
    return command
