"""The embedded dev stack, its CLI and the shared fixtures, against real processes.

CLI tests run ``vectorizer`` in a subprocess (as a developer would), so the services must outlive
the command that started them and be found again through the state file.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import psutil
import psycopg
import pytest
from kafka import KafkaConsumer, KafkaProducer

from infra import pgadmin
from infra.broker import TansuBroker
from infra.errors import BinaryNotFoundError, PortInUseError, ServiceStartError
from infra.ports import port_accepts
from infra.postgres import EmbeddedPostgres, default_bin_dir
from infra.urls import sqlalchemy_url, with_database

ENV_LINE = {
    "DATABASE_URL": re.compile(r"postgresql://postgres@127\.0\.0\.1:\d+/postgres"),
    "KAFKA_BOOTSTRAP_SERVERS": re.compile(r"127\.0\.0\.1:\d+"),
}


def vectorizer(state_dir: Path, *args: str, check: bool = True,
               env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run the real CLI entry point in a fresh interpreter."""
    return subprocess.run(
        [sys.executable, "-c", "from infra.cli import main; main()",
         "dev", "--state-dir", str(state_dir), *args],
        capture_output=True, text=True, timeout=120, check=check, env={**os.environ, **(env or {})},
    )


def parse_env(output: str) -> dict[str, str]:
    return dict(line.split("=", 1) for line in output.splitlines())


def gone(pid: int) -> bool:
    """A stopped service is no process at all, or a zombie waiting for init to reap it."""
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def wait_for(condition, timeout: float = 10.0) -> bool:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


@pytest.fixture
def scratch_dir() -> Iterator[Path]:
    """A state dir under /tmp that the unprivileged Postgres user can reach."""
    path = Path(tempfile.mkdtemp(prefix="vz-infra-"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="module")
def cli_stack() -> Iterator[tuple[Path, dict[str, str]]]:
    """One stack started through the CLI for the read-only CLI tests; always brought down."""
    state_dir = Path(tempfile.mkdtemp(prefix="vz-cli-"))
    try:
        result = vectorizer(state_dir, "up")
        yield state_dir, parse_env(result.stdout)
    finally:
        vectorizer(state_dir, "down", check=False)
        shutil.rmtree(state_dir, ignore_errors=True)


def test_up_is_idempotent(cli_stack: tuple[Path, dict[str, str]]) -> None:
    state_dir, env = cli_stack
    pids_before = json.loads((state_dir / "stack.json").read_text())
    again = vectorizer(state_dir, "up")
    assert parse_env(again.stdout) == env
    assert json.loads((state_dir / "stack.json").read_text()) == pids_before
    status = vectorizer(state_dir, "status").stdout
    assert f"pid={pids_before['postgres']['pid']}" in status
    assert f"pid={pids_before['broker']['pid']}" in status


def test_env_output_format(cli_stack: tuple[Path, dict[str, str]]) -> None:
    state_dir, env = cli_stack
    out = vectorizer(state_dir, "env").stdout
    lines = out.splitlines()
    assert [line.split("=", 1)[0] for line in lines] == ["DATABASE_URL", "KAFKA_BOOTSTRAP_SERVERS"]
    for line in lines:
        key, value = line.split("=", 1)
        assert ENV_LINE[key].fullmatch(value), line
    assert parse_env(out) == env


def test_env_fails_clearly_when_stack_is_down(scratch_dir: Path) -> None:
    result = vectorizer(scratch_dir, "env", check=False)
    assert result.returncode != 0
    assert "vectorizer dev up" in result.stderr
    assert result.stdout == ""


def test_cli_stack_serves_pgvector_and_logical_wal(cli_stack: tuple[Path, dict[str, str]]) -> None:
    _, env = cli_stack
    with psycopg.connect(env["DATABASE_URL"], autocommit=True) as conn:
        conn.execute("CREATE EXTENSION IF NOT EXISTS vector")
        assert conn.execute("SELECT '[1,2]'::vector <-> '[1,5]'::vector").fetchone() == (3.0,)
        assert conn.execute("SHOW wal_level").fetchone() == ("logical",)
        assert int(conn.execute("SHOW max_replication_slots").fetchone()[0]) >= 20
        assert int(conn.execute("SHOW max_wal_senders").fetchone()[0]) >= 20
        assert conn.execute("SHOW synchronous_commit").fetchone() == ("on",)
        assert conn.execute("SHOW listen_addresses").fetchone() == ("127.0.0.1",)


def test_fresh_database_has_pgvector_and_is_dropped(database_url: str) -> None:
    """What ``fresh_database_url`` does: the drop must also remove a slot a walsender is streaming."""
    with pgadmin.temporary_database(database_url) as url:
        name = url.rsplit("/", 1)[1]
        slot = f"slot_{name}"
        with psycopg.connect(url, autocommit=True) as conn:
            assert conn.execute("SELECT extversion FROM pg_extension WHERE extname = 'vector'").fetchone()
            conn.execute("CREATE PUBLICATION everything FOR ALL TABLES")
            conn.execute("SELECT pg_create_logical_replication_slot(%s, 'pgoutput')", (slot,))
        streamer = subprocess.Popen(
            [str(default_bin_dir() / "pg_recvlogical"), "-d", url, "--slot", slot, "--start", "--no-loop",
             "-f", "/dev/null", "-o", "proto_version=1", "-o", "publication_names=everything"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        try:
            with psycopg.connect(database_url) as conn:
                active = "SELECT active FROM pg_replication_slots WHERE slot_name = %s"
                is_active = lambda: conn.execute(active, (slot,)).fetchone() == (True,)  # noqa: E731
                assert wait_for(is_active), "slot never active"
        except BaseException:
            streamer.kill()
            raise
    streamer.wait(timeout=30)  # its walsender was terminated by the drop
    with psycopg.connect(database_url) as conn:
        assert conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone() is None
        slots = conn.execute("SELECT slot_name FROM pg_replication_slots WHERE database = %s", (name,))
        assert slots.fetchall() == []


def test_wal_level_is_logical(fresh_database_url: str) -> None:
    with psycopg.connect(fresh_database_url) as conn:
        assert conn.execute("SHOW wal_level").fetchone() == ("logical",)


def test_broker_produce_consume(kafka_bootstrap_servers: str) -> None:
    topic = f"infra-test-{uuid.uuid4().hex[:8]}"
    producer = KafkaProducer(bootstrap_servers=kafka_bootstrap_servers, acks="all")
    sent = [f"message-{i}".encode() for i in range(20)]
    for value in sent:
        producer.send(topic, key=b"k", value=value)
    producer.flush(timeout=30)
    producer.close()

    consumer = KafkaConsumer(topic, bootstrap_servers=kafka_bootstrap_servers,
                             auto_offset_reset="earliest", enable_auto_commit=False)
    received: list[bytes] = []
    deadline = time.monotonic() + 30
    try:
        while len(received) < len(sent) and time.monotonic() < deadline:
            for records in consumer.poll(timeout_ms=500).values():
                received.extend(record.value for record in records)
    finally:
        consumer.close()
    assert received == sent


def test_down_stops_everything_and_drops_slots(scratch_dir: Path) -> None:
    env = parse_env(vectorizer(scratch_dir, "up").stdout)
    state = json.loads((scratch_dir / "stack.json").read_text())
    with psycopg.connect(env["DATABASE_URL"], autocommit=True) as conn:
        conn.execute("SELECT pg_create_logical_replication_slot('left_behind', 'pgoutput')")
        others = conn.execute("SELECT pid FROM pg_stat_activity WHERE pid <> pg_backend_pid()")
        backend_pids = [row[0] for row in others]

    down = vectorizer(scratch_dir, "down")
    assert "left_behind" in down.stdout
    for pid in [state["postgres"]["pid"], state["broker"]["pid"], *backend_pids]:
        assert wait_for(lambda pid=pid: gone(pid)), f"pid {pid} still running after down"
    pg_port = int(env["DATABASE_URL"].rsplit(":", 1)[1].split("/")[0])
    kafka_port = int(env["KAFKA_BOOTSTRAP_SERVERS"].rsplit(":", 1)[1])
    assert not port_accepts(pg_port) and not port_accepts(kafka_port)
    status = vectorizer(scratch_dir, "status", check=False)
    assert status.returncode == 1 and "postgres: stopped" in status.stdout

    # the cluster persists across down/up; the slot must not
    env = parse_env(vectorizer(scratch_dir, "up").stdout)
    try:
        with psycopg.connect(env["DATABASE_URL"]) as conn:
            assert conn.execute("SELECT count(*) FROM pg_replication_slots").fetchone() == (0,)
    finally:
        vectorizer(scratch_dir, "down")


def test_missing_binaries_raise_a_named_error(scratch_dir: Path) -> None:
    with pytest.raises(BinaryNotFoundError, match="initdb"):
        EmbeddedPostgres(scratch_dir / "pg", bin_dir=scratch_dir / "no-such-bin").start()
    with pytest.raises(BinaryNotFoundError, match="tansu"):
        TansuBroker(scratch_dir / "broker.log", binary=scratch_dir / "no-such-dir" / "tansu").start()


def test_cli_reports_missing_binary_without_traceback(scratch_dir: Path) -> None:
    for env_var, missing in [("VECTORIZER_TANSU_BIN", "/nonexistent/tansu"),
                             ("VECTORIZER_PG_BIN_DIR", "/nonexistent/pg/bin")]:
        result = vectorizer(scratch_dir, "up", check=False, env={env_var: missing})
        assert result.returncode == 1, result.stderr
        assert "BinaryNotFoundError" in result.stderr and missing in result.stderr
        assert "Traceback" not in result.stderr
        assert not (scratch_dir / "postgres").exists(), "nothing may start when a binary is missing"


def test_busy_port_raises_a_named_error(scratch_dir: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(PortInUseError, match=str(port)):
            TansuBroker(scratch_dir / "broker.log", port=port).start()
        with pytest.raises(PortInUseError, match=str(port)):
            EmbeddedPostgres(scratch_dir / "pg", port=port).start()
        result = vectorizer(scratch_dir, "up", "--kafka-port", str(port), check=False)
    try:
        assert result.returncode == 1 and "PortInUseError" in result.stderr
    finally:
        vectorizer(scratch_dir, "down")


def test_failed_start_reports_the_log_tail(scratch_dir: Path) -> None:
    server = EmbeddedPostgres(scratch_dir / "pg")
    server.init()
    with (server.data_dir / "postgresql.conf").open("a") as conf:
        conf.write("wal_level = sideways\n")
    with pytest.raises(ServiceStartError, match="sideways"):
        server.start()
    assert not server.is_running()


def test_restarts_keep_ports_for_fault_injection(
    restartable_postgres: EmbeddedPostgres, restartable_broker: TansuBroker
) -> None:
    server, broker = restartable_postgres, restartable_broker
    try:
        url, servers = server.url, broker.bootstrap_servers
        first_pid = server.pid
        assert server.restart(mode="immediate") == url and server.pid != first_pid
        with psycopg.connect(url) as conn:
            assert conn.execute("SELECT 1").fetchone() == (1,)
        first_broker = broker.pid
        assert broker.restart(graceful=False) == servers and broker.pid != first_broker
        assert first_broker is not None and gone(first_broker)
        producer = KafkaProducer(bootstrap_servers=servers)
        producer.send("after-restart", b"x").get(timeout=30)
        producer.close()
    finally:
        broker.stop()
        server.stop()
    assert not server.is_running() and not broker.is_running()


def test_sqlalchemy_url_helper() -> None:
    assert sqlalchemy_url("postgresql://pg@h:5/postgres") == "postgresql+psycopg://pg@h:5/postgres"
    assert sqlalchemy_url("postgres://u:p@h/db?sslmode=off") == "postgresql+psycopg://u:p@h/db?sslmode=off"
    assert sqlalchemy_url("postgresql+asyncpg://u@h/db") == "postgresql+psycopg://u@h/db"
    assert with_database("postgresql://u@h:1/postgres?x=1", "other") == "postgresql://u@h:1/other?x=1"
    with pytest.raises(ValueError):
        sqlalchemy_url("mysql://h/db")


def test_taken_port_is_retried_unless_pinned(scratch_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Another process may bind the chosen port before the service does: start again elsewhere."""
    import infra.broker

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        real_free_port = infra.broker.free_port
        handed_out: list[int] = []

        def racy_free_port() -> int:
            handed_out.append(port if not handed_out else real_free_port())
            return handed_out[-1]

        monkeypatch.setattr(infra.broker, "free_port", racy_free_port)
        broker = TansuBroker(scratch_dir / "broker.log")
        try:
            servers = broker.start()
            assert handed_out[0] == port and servers == f"127.0.0.1:{handed_out[-1]}" != f"127.0.0.1:{port}"
        finally:
            broker.stop()

        server = EmbeddedPostgres(scratch_dir / "pg", port=port, strict_port=False)
        try:
            assert server.start() != f"postgresql://postgres@127.0.0.1:{port}/postgres"
        finally:
            server.stop()
