"""``vectorizer --config FILE``: the file's values reach each command's options; flags and
environment variables win over it; typos are errors that name them."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click
import pytest

from infra.cli import main
from infra.config_file import CONFIG_ENV, ConfigFileError, default_map

FILE = """
database-url = "postgresql://vz@db.example:5432/app"
kafka_bootstrap_servers = "kafka:9092"
topic-prefix = "prod"

[connector]
partitions = 12
metrics-port = 9100

[worker]
concurrency = 3
embedding-timeout = 12.5
without-web = true
"""


@pytest.fixture
def config(tmp_path: Path) -> Path:
    path = tmp_path / "vectorizer.toml"
    path.write_text(FILE)
    return path


def resolve(args: list[str], command: str, command_args: list[str] = ()) -> dict[str, Any]:  # type: ignore[assignment]
    """The option values ``vectorizer ARGS COMMAND COMMAND_ARGS`` would run with (not run)."""
    with main.make_context("vectorizer", [*args, command]) as ctx:
        sub = main.get_command(ctx, command)
        assert sub is not None
        with sub.make_context(command, list(command_args), parent=ctx) as sub_ctx:
            return dict(sub_ctx.params)


@pytest.fixture(autouse=True)
def no_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("DATABASE_URL", "KAFKA_BOOTSTRAP_SERVERS", "VECTORIZER_TOPIC_PREFIX",
                 "VECTORIZER_PARTITIONS", CONFIG_ENV):
        monkeypatch.delenv(name, raising=False)


def test_shared_keys_and_tables_reach_each_command(config: Path) -> None:
    connector = resolve(["--config", str(config)], "connector")
    assert (connector["database_url"], connector["bootstrap_servers"], connector["topic_prefix"],
            connector["partitions"], connector["metrics_port"]) == (
        "postgresql://vz@db.example:5432/app", "kafka:9092", "prod", 12, 9100)
    worker = resolve(["--config", str(config)], "worker")
    assert (worker["concurrency"], worker["embedding_timeout"], worker["without_web"],
            worker["topic_prefix"]) == (3, 12.5, True, "prod")
    assert worker["batch_size"] == 256  # not in the file: the built-in default
    # errors has no broker option: the shared key simply does not apply there
    assert resolve(["--config", str(config)], "errors")["database_url"].endswith("/app")


def test_environment_and_flags_win_over_the_file(config: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VECTORIZER_PARTITIONS", "3")
    assert resolve(["--config", str(config)], "connector")["partitions"] == 3
    assert resolve(["--config", str(config)], "connector", ["--partitions", "7"])["partitions"] == 7


def test_the_file_can_come_from_the_environment(config: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(CONFIG_ENV, str(config))
    assert resolve([], "connector")["partitions"] == 12


def test_values_are_checked_like_flags(tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_text("database-url = 'postgresql://db/app'\nbootstrap-servers = 'kafka:9092'\n"
                    "[connector]\npartitions = 0\n")
    with pytest.raises(click.BadParameter, match="0 is not in the range") as raised:
        resolve(["--config", str(path)], "connector")
    assert raised.value.param is not None and raised.value.param.name == "partitions"


@pytest.mark.parametrize(("text", "message"), [
    ("[wroker]\nconcurrency = 2\n", r"\[wroker\] is not a command"),
    ("[worker]\nembeding-timeout = 3\n", r"\[worker\] embeding-timeout: `vectorizer worker` has no"
                                         r" such option \(it has: .*embedding-timeout"),
    ("databse-url = 'x'\n", "databse-url: no command has such an option"),
    ("partitions = [\n", "is not valid TOML"),
])
def test_mistakes_name_what_is_wrong(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "vectorizer.toml"
    path.write_text(text)
    with pytest.raises(ConfigFileError, match=message):
        default_map(path, main.load_all())


def test_a_missing_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigFileError, match="cannot read the configuration file"):
        default_map(tmp_path / "nope.toml", main.load_all())
