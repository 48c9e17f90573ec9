"""docker-compose.yml and Dockerfile: structure, and that they only use what the CLI really has.

No Docker engine is needed: the compose file is parsed with PyYAML, and every service command is
parsed by the real ``vectorizer`` click group with the service's environment, exactly as the
container's entry point would parse it. A renamed option or environment variable fails here
instead of in someone's deployment.
"""

from __future__ import annotations

import re
import tomllib
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
    command = main.load_all().get(name)
    assert command is not None, f"`vectorizer {name}` does not exist; commands: {sorted(main.load_all())}"
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
    # PostgreSQL 18, like the embedded stack and the tests; a pinned pgvector release
    assert re.fullmatch(r"pgvector/pgvector:\d+\.\d+\.\d+-pg18", pg["image"]), pg["image"]
    # an 18 image keeps PGDATA under /var/lib/postgresql/18/docker: the volume is its parent
    assert any(str(v).endswith(":/var/lib/postgresql") for v in pg.get("volumes", []))
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
    assert any(re.search(r"pip install (--no-deps )?\.", line) for line in lines)
    for package in ("connector", "processors", "pgai_orm", "infra"):
        assert f"COPY {package} " in text


def test_dockerfile_installs_dependencies_before_copying_the_code() -> None:
    """A code change must not reinstall every dependency: the layer that resolves them comes
    from pyproject.toml alone, and the code is installed after it without dependencies."""
    lines = [line.strip() for line in DOCKERFILE.read_text().splitlines()]
    first_code = min(i for i, line in enumerate(lines) if re.match(r"COPY (connector|processors|pgai_orm|infra) ", line))
    deps = [i for i, line in enumerate(lines) if "pip install" in line and "--no-deps" not in line
            and "uninstall" not in line]
    assert deps and max(deps) < first_code, "dependencies must be installed before the code is copied"
    assert any("pip install --no-deps ." in line for line in lines[first_code:])
    copies = [line for line in lines[:first_code] if line.startswith("COPY")]
    assert copies == ["COPY pyproject.toml README.md ./"]
    extras = re.search(r"ARG EXTRAS=(\S+)", "\n".join(lines))
    assert extras, "the image's extras are a build argument"
    declared = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    assert set(extras.group(1).split(",")) <= set(declared)
    assert "dev" not in extras.group(1).split(","), "the dev-stack binaries stay out of the image"


def test_every_image_is_pinned(services: dict[str, dict[str, Any]]) -> None:
    """No floating tags: a release number in every image, and ours is the project's version."""
    version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    for name, service in services.items():
        image = service["image"]
        repo, _, tag = image.rpartition(":")
        assert repo and tag and tag != "latest", f"{name}: {image} has no pinned tag"
        assert re.search(r"\d+\.\d+", tag), f"{name}: {image} is not a release tag"
        if "build" in service:
            assert tag == version, f"{name}: built image {image}, project version {version}"


def test_every_service_has_a_healthcheck(services: dict[str, dict[str, Any]]) -> None:
    for name, service in services.items():
        if name == "kafka-ui":
            continue  # optional, profile ui
        check = service.get("healthcheck")
        assert check and check.get("test"), f"{name} has no healthcheck"


@pytest.mark.parametrize("name", VECTORIZER_SERVICES)
def test_vectorizer_services_serve_metrics_and_are_checked_on_them(
        services: dict[str, dict[str, Any]], name: str) -> None:
    service = services[name]
    command = subcommand(command_of(service)[1])
    env = env_of(service)
    (port_var,) = [v for v in envvars_read(command) if v.endswith("_METRICS_PORT")]
    port = env.get(port_var)
    assert port, f"{name}: set {port_var} so the healthcheck and Prometheus have an endpoint"
    assert f":{port}/metrics" in " ".join(service["healthcheck"]["test"])
    assert str(port) in [str(p) for p in service.get("expose", [])]


def test_stop_grace_period_covers_the_drain(services: dict[str, dict[str, Any]]) -> None:
    """The worker drains for up to 30 s on SIGTERM (docs/operations.md); compose must wait longer
    before it kills (its default is 10 s)."""
    for name in VECTORIZER_SERVICES:
        grace = str(services[name].get("stop_grace_period", "10s"))
        match = re.fullmatch(r"(\d+)s", grace)
        assert match and int(match.group(1)) > 30, f"{name}: stop_grace_period {grace}"
    assert "30 s" in (ROOT / "docs" / "operations.md").read_text()


def test_compose_project_is_named(compose: dict[str, Any]) -> None:
    assert compose.get("name") == "pg-stream-vectorizer"


def test_the_connector_owns_the_partition_count(services: dict[str, dict[str, Any]]) -> None:
    """Topics are created by the connector with its own partition count: the broker's default
    would have no effect, so the compose file sets only the connector's."""
    assert "KAFKA_NUM_PARTITIONS" not in env_of(services["kafka"])
    assert int(env_of(services["connector"])["VECTORIZER_PARTITIONS"]) >= 1


# docs/configuration.md against the CLI: tests/unit/test_configuration_doc.py
