"""Every command follows one naming scheme (:mod:`pgai_orm.runtime.options`), and shows every
environment variable it reads in ``--help``.

The checks read the commands' click parameters, so they follow whatever a command defines.
``PENDING`` lists the problems of commands that are being rewritten (the worker): the test
fails both on a new problem and on a listed one that is gone, so the list only ever shrinks to
empty.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

import click
from click.testing import CliRunner

from infra.cli import main
from pgai_orm.runtime.options import Option

#: Known problems, as ``"<command>: <problem>"``: the worker's author removes each entry when
#: applying the scheme (see docs/configuration.md, "Naming").
PENDING: set[str] = set()

SHARED_ENV = {"DATABASE_URL", "KAFKA_BOOTSTRAP_SERVERS", "VECTORIZER_CONFIG"}


def commands(group: click.Command = main, path: str = "") -> Iterator[tuple[str, click.Command]]:
    yield path or "vectorizer", group
    if isinstance(group, click.Group):
        for name, sub in sorted(group.commands.items()):
            yield from commands(sub, f"{path} {name}".strip())


def visible_opts(param: click.Option) -> list[str]:
    hidden = set(param.hidden_aliases) if isinstance(param, Option) else set()
    return [o for o in (*param.opts, *param.secondary_opts) if o not in hidden]


def envvars(param: click.Parameter) -> list[str]:
    envvar = getattr(param, "envvar", None)
    return [envvar] if isinstance(envvar, str) else list(envvar or ())


def help_text(path: str) -> str:
    args = [] if path == "vectorizer" else path.split()
    result = CliRunner().invoke(main, [*args, "--help"], terminal_width=200)
    assert result.exit_code == 0, result.output
    return " ".join(result.output.split())


def problems() -> set[str]:
    found: set[str] = set()
    for path, command in commands():
        if getattr(command, "hidden", False) or command.help and command.help.startswith("(needs:"):
            continue
        shown = help_text(path)
        for param in command.params:
            if not isinstance(param, click.Option) or param.hidden:
                continue
            opts = visible_opts(param)
            name = opts[0] if opts else param.name
            for opt in opts:
                if not re.fullmatch(r"--[a-z][a-z0-9]*(-[a-z0-9]+)*|-[a-zA-Z]", opt):
                    found.add(f"{path}: {opt}: flags are --kebab-case")
                if opt == "--loglevel":
                    found.add(f"{path}: {opt}: the level is --log-level")
                if opt == "--bootstrap-servers":
                    found.add(f"{path}: {opt}: the broker is --kafka-bootstrap-servers")
                if re.search(r"-(ms|millis|seconds|secs|s)$", opt):
                    found.add(f"{path}: {opt}: durations are seconds, without a unit suffix")
            for var in envvars(param):
                if var not in SHARED_ENV and not var.startswith("VECTORIZER_"):
                    found.add(f"{path}: {name}: ${var} is not VECTORIZER_<FLAG>")
                if var not in shown:
                    found.add(f"{path}: {name}: reads ${var} but --help does not show it")
            if param.name == "bootstrap_servers" and "--kafka-bootstrap-servers" not in opts:
                found.add(f"{path}: {name}: the broker is --kafka-bootstrap-servers")
            if param.name == "database_url" and opts != ["--database-url"]:
                found.add(f"{path}: {name}: the database is --database-url")
    return found


def test_every_command_follows_the_naming_scheme() -> None:
    found = problems()
    new = sorted(found - PENDING)
    fixed = sorted(PENDING - found)
    assert not new, f"commands break the naming scheme (pgai_orm/runtime/options.py): {new}"
    assert not fixed, f"fixed: remove these from PENDING in {__file__}: {fixed}"


def test_old_spellings_still_parse_but_stay_out_of_help() -> None:
    connector = main.load_all()["connector"]
    ctx = connector.make_context("connector", [
        "--database-url", "postgresql://u@h/db", "--bootstrap-servers", "k:9092",
        "--catalog-poll", "2", "--broker-check", "3", "--log-level", "debug"])
    assert ctx.params["bootstrap_servers"] == "k:9092"
    assert (ctx.params["poll_interval"], ctx.params["broker_check_interval"]) == (2.0, 3.0)
    assert ctx.params["log_level"] == "DEBUG"
    shown = help_text("connector")
    assert "--kafka-bootstrap-servers" in shown and "--bootstrap-servers" not in shown.replace(
        "--kafka-bootstrap-servers", "")
    assert "--catalog-poll" not in shown and "--poll-interval" in shown


def test_dev_takes_the_state_dir_after_the_subcommand_too(tmp_path: object) -> None:
    """``vectorizer dev up --state-dir X`` like ``vectorizer status --state-dir X``."""
    dev = main.load_all()["dev"]
    assert isinstance(dev, click.Group)
    for name in ("up", "down", "status", "env"):
        assert any(isinstance(p, click.Option) and "--state-dir" in p.opts
                   for p in dev.commands[name].params), name
    result = CliRunner().invoke(main, ["dev", "env", "--state-dir", str(tmp_path)])
    assert result.exit_code != 0 and "not running" in result.output


def test_a_sqlalchemy_url_reaches_the_command_as_a_libpq_url() -> None:
    connector = main.load_all()["connector"]
    ctx = connector.make_context("connector", [
        "--database-url", "postgresql+psycopg://u:p@h:5433/db", "--kafka-bootstrap-servers", "k"])
    assert ctx.params["database_url"] == "postgresql://u:p@h:5433/db"
    result = CliRunner().invoke(main, ["connector", "--database-url", "mysql://u@h/db",
                                       "--kafka-bootstrap-servers", "k"])
    assert result.exit_code == 2
    assert "not PostgreSQL" in result.output and "postgresql://" in result.output
