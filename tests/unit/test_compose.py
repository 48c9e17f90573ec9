"""docker-compose.yml and Dockerfile: structure, and that they only use what the CLI really has.

No Docker engine is needed: the compose file is parsed with PyYAML, and every service command is
parsed by the real ``vectorizer`` click group with the service's environment, exactly as the
container's entry point would parse it. A renamed option or environment variable fails here
instead of in someone's deployment.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import click
import pytest
import yaml

from infra.cli import main

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "Dockerfile"
VECTORIZER_SERVICES = ("connector", "worker")

#: Variables the third-party images read (their documentation), by service.
IMAGE_ENV = {
    "postgres": lambda name: name in {"POSTGRES_USER", "POSTGRES_PASSWORD", "POSTGRES_DB",
                                      "POSTGRES_INITDB_ARGS", "PGDATA"},
    "kafka": lambda name: name == "CLUSTER_ID" or name.startswith("KAFKA_"),
    "kafka-ui": lambda name: name.startswith("KAFKA_CLUSTERS_") or name == "DYNAMIC_CONFIG_ENABLED",
}


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE.read_text())


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return compose["services"]


def env_of(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):  # the "KEY=value" list form
        env = dict(item.split("=", 1) for item in env)
    return {str(k): str(v) for k, v in env.items()}


def command_of(service: dict[str, Any]) -> list[str]:
    command = service["command"]
    return command.split() if isinstance(command, str) else [str(c) for c in command]


def subcommand(name: str) -> click.Command:
    assert isinstance(main, click.Group)
    command = main.commands.get(name)
    assert command is not None, f"`vectorizer {name}` does not exist; commands: {sorted(main.commands)}"
    return command


def envvars_read(command: click.Command) -> set[str]:
    names: set[str] = set()
    for param in command.params:
        envvar = getattr(param, "envvar", None)
        if isinstance(envvar, str):
            names.add(envvar)
        elif envvar:
            names.update(envvar)
    return names


def test_services_present(services: dict[str, dict[str, Any]]) -> None:
    assert {"postgres", "kafka", "connector", "worker"} <= set(services)


def test_postgres_has_pgvector_and_logical_wal(services: dict[str, dict[str, Any]]) -> None:
    pg = services["postgres"]
    assert pg["image"] in ("pgvector/pgvector:pg17", "pgvector/pgvector:pg18")
    command = command_of(pg)
    assert command[0] == "postgres"
    flags = {command[i + 1] for i, token in enumerate(command[:-1]) if token == "-c"}
    assert "wal_level=logical" in flags
    assert "healthcheck" in pg


def test_kafka_is_single_node_kraft(services: dict[str, dict[str, Any]]) -> None:
    kafka = services["kafka"]
    assert kafka["image"].startswith("apache/kafka:")
    env = env_of(kafka)
    assert set(env["KAFKA_PROCESS_ROLES"].split(",")) == {"broker", "controller"}
    node = env["KAFKA_NODE_ID"]
    assert env["KAFKA_CONTROLLER_QUORUM_VOTERS"].startswith(f"{node}@kafka:")
    assert env["KAFKA_CONTROLLER_LISTENER_NAMES"] in env["KAFKA_LISTENERS"]
    assert not any("ZOOKEEPER" in name for name in env)
    assert env["KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR"] == "1"  # one broker
    assert "healthcheck" in kafka


def test_vectorizer_services_are_built_from_the_dockerfile(services: dict[str, dict[str, Any]]) -> None:
    for name in VECTORIZER_SERVICES:
        build = services[name]["build"]
        context = build if isinstance(build, str) else build.get("context", ".")
        dockerfile = "Dockerfile" if isinstance(build, str) else build.get("dockerfile", "Dockerfile")
        assert (ROOT / context / dockerfile).resolve() == DOCKERFILE
        depends = services[name]["depends_on"]
        assert {"postgres", "kafka"} <= set(depends)


def test_workers_can_scale(services: dict[str, dict[str, Any]]) -> None:
    worker = services["worker"]
    assert "container_name" not in worker, "`--scale worker=N` needs distinct container names"
    assert "ports" not in worker, "fixed host ports collide when workers scale"


@pytest.mark.parametrize("name", VECTORIZER_SERVICES)
def test_command_is_a_real_subcommand_with_real_options(
    services: dict[str, dict[str, Any]], name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    service = services[name]
    argv = command_of(service)
    assert argv[0] == "vectorizer"
    command = subcommand(argv[1])
    # Parse as the container does: with exactly the service's environment for the CLI's vars.
    for var in envvars_read(command):
        monkeypatch.delenv(var, raising=False)
    for key, value in env_of(service).items():
        monkeypatch.setenv(key, value)
    ctx = command.make_context(f"vectorizer {argv[1]}", list(argv[2:]))
    assert ctx.params.get("database_url") == env_of(service)["DATABASE_URL"]


@pytest.mark.parametrize("name", VECTORIZER_SERVICES)
def test_every_env_var_is_read_by_the_cli(services: dict[str, dict[str, Any]], name: str) -> None:
    service = services[name]
    read = envvars_read(subcommand(command_of(service)[1]))
    unknown = set(env_of(service)) - read
    assert not unknown, f"{name} sets {sorted(unknown)}, which `vectorizer` never reads ({sorted(read)})"
    assert {"DATABASE_URL", "KAFKA_BOOTSTRAP_SERVERS"} <= set(env_of(service))


@pytest.mark.parametrize("name", sorted(IMAGE_ENV))
def test_image_env_vars_are_known(services: dict[str, dict[str, Any]], name: str) -> None:
    if name not in services:
        pytest.fail(f"service {name} missing")
    unknown = [var for var in env_of(services[name]) if not IMAGE_ENV[name](var)]
    assert not unknown


def test_services_point_at_each_other(services: dict[str, dict[str, Any]]) -> None:
    pg_env = env_of(services["postgres"])
    kafka_env = env_of(services["kafka"])
    advertised = {u.split("://", 1)[1] for u in kafka_env["KAFKA_ADVERTISED_LISTENERS"].split(",")}
    for name in VECTORIZER_SERVICES:
        env = env_of(services[name])
        url = urlsplit(env["DATABASE_URL"])
        assert url.scheme == "postgresql"
        assert url.hostname == "postgres"
        assert url.username == pg_env["POSTGRES_USER"]
        assert url.password == pg_env["POSTGRES_PASSWORD"]
        assert url.path.lstrip("/") == pg_env["POSTGRES_DB"]
        for server in env["KAFKA_BOOTSTRAP_SERVERS"].split(","):
            assert server in advertised, f"{server} is not an advertised Kafka listener"


def test_kafka_ui_is_optional(services: dict[str, dict[str, Any]]) -> None:
    ui = services.get("kafka-ui")
    if ui is not None:
        assert ui.get("profiles"), "Kafka UI must not start by default"


def test_dockerfile_installs_the_project() -> None:
    text = DOCKERFILE.read_text()
    lines = [line.strip() for line in text.splitlines() if line.strip() and not line.startswith("#")]
    assert lines[0] == "FROM python:3.11-slim"
    assert any("pip install ." in line for line in lines)
    for package in ("connector", "processors", "pgai_orm", "infra"):
        assert f"COPY {package} " in text



def all_params(command: click.Command, path: str = "vectorizer") -> list[tuple[str, click.Parameter]]:
    found = [(path, p) for p in command.params]
    if isinstance(command, click.Group):
        for name, sub in command.commands.items():
            found += all_params(sub, f"{path} {name}")
    return found


def test_configuration_doc_names_every_flag_and_variable() -> None:
    """docs/configuration.md is the one reference: a new flag or variable must be added there."""
    doc = (ROOT / "docs" / "configuration.md").read_text()
    missing = []
    for path, param in all_params(main):
        if isinstance(param, click.Option):
            for flag in param.opts + param.secondary_opts:
                if f"`{flag}`" not in doc and f"`{flag} /" not in doc and f"/ `{flag}`" not in doc:
                    missing.append(f"{path} {flag}")
        envvar = getattr(param, "envvar", None)
        for var in [envvar] if isinstance(envvar, str) else list(envvar or ()):
            if f"`{var}`" not in doc:
                missing.append(f"{path} ${var}")
    assert not missing, f"not in docs/configuration.md: {missing}"
