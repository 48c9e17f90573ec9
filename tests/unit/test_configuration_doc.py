"""docs/configuration.md against the CLI itself, so the page cannot drift from the code.

Each command's table is read from the page and compared with that command's click parameters:
every visible option has a row, every row names a real option, the env column is exactly the
variable the option reads, and a default written as a literal is the option's default. The
comparison reads whatever the commands define (the worker included), so a renamed flag, a new
variable or a changed default fails here until the page says so too.
"""

from __future__ import annotations

import re
from pathlib import Path

import click
import pytest

from infra.cli import main
from pgai_orm.runtime.options import Option

DOC = Path(__file__).resolve().parents[2] / "docs" / "configuration.md"
#: heading of a section -> the commands its table describes when it has no "command" column
SECTIONS = {"Configuration file": "", "`vectorizer connector`": "connector",
            "`vectorizer worker`": "worker", "`vectorizer demo`": "demo", "`vectorizer dev`": "dev"}


def command_at(path: str) -> click.Command:
    command: click.Command = main
    for part in path.split():
        assert isinstance(command, click.Group), path
        command = command.commands[part]
    return command


def cells(line: str) -> list[str]:
    return [c.strip() for c in line.strip().strip("|").split("|")]


def doc_rows() -> dict[str, dict[str, dict[str, str]]]:
    """command path -> flag -> {"env": ..., "default": ...} from every table of the page."""
    rows: dict[str, dict[str, dict[str, str]]] = {}
    section = ""
    header: list[str] = []
    for line in DOC.read_text().splitlines():
        if line.startswith("## "):
            section, header = line[3:].strip(), []
            continue
        if not line.startswith("|"):
            header = []
            continue
        row = cells(line)
        if not header:
            header = [h.lower() for h in row]
            continue
        if set(line) <= set("|-: ") or "flag" not in header:
            continue
        record = dict(zip(header, row, strict=False))
        if "command" in record:
            paths = [c.strip().strip("`").strip() for c in record["command"].split(",")]
        elif section in SECTIONS:
            paths = [SECTIONS[section]]
        else:
            continue
        flags = re.findall(r"`(--[a-z0-9-]+)`", record["flag"])
        for path in paths:
            for flag in flags:
                rows.setdefault(path, {})[flag] = record
    return rows


def documented_paths() -> list[str]:
    paths = {"", "connector", "worker", "demo", "dev", "status", "errors", "replay", "pause",
             "resume"}
    dev = main.load_all()["dev"]
    assert isinstance(dev, click.Group)
    return sorted(paths)


def options(command: click.Command) -> list[click.Option]:
    return [p for p in command.params if isinstance(p, click.Option) and not p.hidden]


def visible(param: click.Option) -> list[str]:
    hidden = set(param.hidden_aliases) if isinstance(param, Option) else set()
    return [o for o in (*param.opts, *param.secondary_opts) if o not in hidden]


def same_value(default: object, text: str) -> bool:
    """``6`` and ``6.0``, ``INFO`` and ``INFO``: the doc writes numbers as people do."""
    if isinstance(default, int | float) and not isinstance(default, bool):
        try:
            return float(text) == float(default)
        except ValueError:
            return False
    return str(default) == text


def env_of(param: click.Option) -> set[str]:
    envvar = param.envvar
    return {envvar} if isinstance(envvar, str) else set(envvar or ())


@pytest.mark.parametrize("path", documented_paths())
def test_every_option_has_a_row_with_its_variable_and_default(path: str) -> None:
    command = command_at(path)
    if command.help and command.help.startswith("(needs:"):
        pytest.skip(f"`vectorizer {path}` is not installed here")
    rows = doc_rows().get(path, {})
    wrong = []
    known = set()
    for param in options(command):
        flags = visible(param)
        known.update(flags)
        row = next((rows[f] for f in flags if f in rows), None)
        if row is None:
            wrong.append(f"{flags[0]}: no row")
            continue
        doc_env = set(re.findall(r"`([A-Z][A-Z0-9_]+)`", row.get("env", "")))
        if "env" in row and doc_env != env_of(param):
            wrong.append(f"{flags[0]}: env {sorted(doc_env)} in the doc, {sorted(env_of(param))} in the CLI")
        literal = re.fullmatch(r"`([^`]+)`", row.get("default", ""))
        default = param.default
        if (literal and default is not None and not callable(default) and not param.is_flag
                and not same_value(default, literal.group(1))):
            wrong.append(f"{flags[0]}: default `{literal.group(1)}` in the doc, {default!r} in the CLI")
    known.update(o for p in command.params if isinstance(p, click.Option) and p.hidden
                 for o in p.opts)  # an internal option may be documented as such
    for flag in rows:
        if flag not in known:
            wrong.append(f"{flag}: documented, but `vectorizer {path}` has no such option")
    assert not wrong, f"docs/configuration.md vs `vectorizer {path}`: {wrong}"


def test_every_subcommand_of_dev_is_described() -> None:
    dev = command_at("dev")
    assert isinstance(dev, click.Group)
    text = DOC.read_text()
    for name in dev.commands:
        assert f"`dev {name}`" in text or f"dev {name}" in text, name
