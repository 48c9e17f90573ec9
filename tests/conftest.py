"""Session fixtures giving every test a real PostgreSQL (pgvector, logical WAL) and Kafka broker.

With ``DATABASE_URL`` / ``KAFKA_BOOTSTRAP_SERVERS`` set, the suite runs against those services
(docker-compose's Postgres and Apache Kafka); otherwise the embedded stack is started once per
session in a temporary state dir and stopped at the end. Each service starts lazily, so a test
that only needs Postgres never waits for the broker. A service that cannot start makes the
fixture fail, never skip: a green run must mean the integration tests really ran.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from infra import pgadmin
from infra.broker import TansuBroker
from infra.postgres import EmbeddedPostgres

#: the tests that need the real Postgres and broker (fixtures below, or fault injection)
_STACK_DIRS = (Path(__file__).parent / "integration", Path(__file__).parent / "reliability")


def pytest_configure(config: pytest.Config) -> None:
    """kafka-python 3.0 warns on every import of its schema files; that noise hides real warnings."""
    config.addinivalue_line("filterwarnings", "ignore:read_text is deprecated:DeprecationWarning")
    config.addinivalue_line("filterwarnings", "ignore:open_text is deprecated:DeprecationWarning")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Everything under tests/integration and tests/reliability carries the ``integration``
    marker, so ``-m "not integration"`` runs only what needs no stack."""
    for item in items:
        parents = Path(str(item.path)).parents
        if any(directory in parents for directory in _STACK_DIRS):
            item.add_marker(pytest.mark.integration)


@pytest.fixture(scope="session")
def _stack_dir() -> Iterator[Path]:
    """A temp state dir under /tmp (pytest's own tmp root is 0700, unreachable for the PG user)."""
    path = Path(tempfile.mkdtemp(prefix="vz-test-"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="session")
def database_url(_stack_dir: Path) -> Iterator[str]:
    """``postgresql://`` URL of the maintenance database (superuser, pgvector available)."""
    external = os.environ.get("DATABASE_URL")
    if external:
        yield external
        return
    server = EmbeddedPostgres(_stack_dir / "postgres")
    url = server.start()
    try:
        yield url
    finally:
        try:
            server.drop_logical_slots()
        finally:
            server.stop()


@pytest.fixture(scope="session")
def kafka_bootstrap_servers(_stack_dir: Path) -> Iterator[str]:
    """``host:port`` of a Kafka-protocol broker (topics are auto-created on first use)."""
    external = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
    if external:
        yield external
        return
    broker = TansuBroker(_stack_dir / "broker.log")
    servers = broker.start()
    try:
        yield servers
    finally:
        broker.stop()


@pytest.fixture
def fresh_database_url(database_url: str) -> Iterator[str]:
    """A new, uniquely named database with ``vector`` installed; dropped (slots first) afterwards."""
    with pgadmin.temporary_database(database_url) as url:
        yield url


@pytest.fixture
def restartable_postgres() -> Iterator[EmbeddedPostgres]:
    """A private, started embedded PostgreSQL for fault injection (``.restart(mode="immediate")``).

    Always embedded, even when ``DATABASE_URL`` is set: the test must own the process it kills.
    ``.url`` is its maintenance database; the port survives restarts.
    """
    path = Path(tempfile.mkdtemp(prefix="vz-pg-"))
    server = EmbeddedPostgres(path / "postgres")
    try:
        server.start()
        yield server
    finally:
        server.stop()
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def restartable_broker() -> Iterator[TansuBroker]:
    """A private, started Tansu broker for fault injection (``.restart()`` loses all topics).

    ``.bootstrap_servers`` is its address; the port survives restarts.
    """
    path = Path(tempfile.mkdtemp(prefix="vz-broker-"))
    broker = TansuBroker(path / "broker.log")
    try:
        broker.start()
        yield broker
    finally:
        broker.stop()
        shutil.rmtree(path, ignore_errors=True)
