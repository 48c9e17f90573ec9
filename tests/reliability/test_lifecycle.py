"""Lifecycle events: the slot dropped or invalidated, vectorizers and tables created again.

Each test runs the connector and the worker as processes (``infra.faults.Pipeline``), makes
writes and deletes that no stream carries (the slot is gone, or no publication covered them),
and then requires the store to equal the source: the audit's lost, duplicated and stale all 0.
Every snapshot is a full resync (its closing truncate removes the rows deleted meanwhile); see
``connector/snapshot.py`` and docs/operations.md "Lifecycle events".
"""

from __future__ import annotations

import json
import random
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg
import pytest
from click.testing import CliRunner

from connector.service import status as connector_status
from infra.faults import Load, Pipeline, create_in_migration, make_pipeline, migration, run_sql
from infra.ops.commands import status_command
from infra.ops.report import read_report
from infra.pgadmin import create_database
from infra.ports import free_port
from infra.postgres import EmbeddedPostgres
from pgai_orm.names import default_slot_name
from tests.support.configs import local_config
from tests.support.polling import wait_for

pytestmark = pytest.mark.reliability

CONFIG = local_config(dimensions=64)


def slot_of(pipeline: Pipeline) -> str:
    return default_slot_name(pipeline.sql("SELECT current_database()")[0][0])


def connector_log(pipeline: Pipeline) -> str:
    return (pipeline.log_dir / "connector.log").read_text(errors="replace")


def slot_status(pipeline: Pipeline) -> tuple[Any, str]:
    """The connector's slot as ``vectorizer status`` reports it, and the vectorizer's phase."""
    report = read_report(pipeline.url)
    slots = {s.name: s for s in report.slots}
    (vz,) = report.vectorizers
    return slots.get(slot_of(pipeline)), vz.connector.describe()


def cli_status(pipeline: Pipeline, *args: str) -> str:
    result = CliRunner().invoke(status_command, ["--database-url", pipeline.url, *args])
    assert result.exit_code == 0, result.output
    return result.output


def scrape(port: int) -> str:
    return urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2).read().decode()


def metric_value(port: int, line_prefix: str) -> float | None:
    try:
        text = scrape(port)
    except OSError:
        return None
    for line in text.splitlines():
        if line.startswith(line_prefix):
            return float(line.rsplit(" ", 1)[1])
    return None


def with_metrics(pipeline: Pipeline) -> int:
    port = free_port()
    pipeline.env["VECTORIZER_CONNECTOR_METRICS_PORT"] = str(port)
    return port


def migrate(pipeline: Pipeline, *steps: Callable[[Any, Any], None]) -> int | None:
    """Run ``steps(op, conn)`` in ONE transaction, as one Alembic migration would; the id of the
    vectorizer created last in it (None if none was)."""
    def run(op: Any) -> int | None:
        conn = op.get_bind()
        for step in steps:
            step(op, conn)
        created = conn.exec_driver_sql(
            "SELECT max(id) FROM vectorizer.vectorizers WHERE source_table = %(t)s",
            {"t": pipeline.table}).scalar_one()
        return None if created is None else int(created)

    result: int | None = migration(pipeline.url, run)
    return result


def drop_vectorizer(pipeline: Pipeline) -> Callable[[Any, Any], None]:
    def step(op: Any, conn: Any) -> None:
        op.drop_vectorizer(target_table=f"{pipeline.table}_embedding_store", drop_all=True)
    return step


def create_vectorizer(pipeline: Pipeline) -> Callable[[Any, Any], None]:
    def step(op: Any, conn: Any) -> None:
        create_in_migration(op, pipeline.table, CONFIG)
    return step


def recreate_table(pipeline: Pipeline, load: Load, rows: int) -> Callable[[Any, Any], None]:
    """DROP TABLE and CREATE TABLE of the same name (a new OID), with ``rows`` new rows."""
    table = f'"{pipeline.table}"'  # docs_<hex>: a plain name

    def step(op: Any, conn: Any) -> None:
        conn.exec_driver_sql(f"DROP TABLE {table}")
        conn.exec_driver_sql(f"CREATE TABLE {table} (id int PRIMARY KEY, title text, content text,"
                             " views int DEFAULT 0)")
        first = load.next_id
        conn.exec_driver_sql(
            f"INSERT INTO {table} (id, title, content) SELECT g, 'doc ' || g,"
            " 'Recreated table row ' || g || '. Postgres streams every change.'"
            f" FROM generate_series({first}, {first + rows - 1}) g")
        load.ids = set(range(first, first + rows))
        load.next_id = first + rows
    return step


def audit_clean(pipeline: Pipeline, what: str, timeout: float = 120.0) -> None:
    audit = pipeline.wait_clean(what, timeout=timeout)
    assert audit.rows_checked == len(pipeline.source_rows())
    assert (audit.lost, audit.duplicated, audit.stale) == (0, 0, 0)


def test_slot_dropped_while_running_or_while_stopped_resyncs_every_table(
        fresh_database_url: str, kafka_bootstrap_servers: str, tmp_path: Path) -> None:
    pipeline = make_pipeline(fresh_database_url, kafka_bootstrap_servers, tmp_path, CONFIG)
    load = Load(pipeline, random.Random(12))
    load.run(30)
    pipeline.start()
    slot = slot_of(pipeline)
    try:
        audit_clean(pipeline, "the first snapshot")

        # (1) dropped under a running connector: end its walsender and drop the slot before the
        # connector's next session (1 s later) takes it again
        load.run(10)

        def dropped() -> bool:
            try:
                pipeline.sql("SELECT pg_terminate_backend(active_pid) FROM pg_replication_slots"
                             " WHERE slot_name = %s AND active_pid IS NOT NULL", (slot,))
                pipeline.sql("SELECT pg_drop_replication_slot(%s)", (slot,))
                return True
            except psycopg.errors.ObjectInUse:
                return False
        wait_for(dropped, "the slot dropped under the running connector", timeout=30)
        load.delete_some(4)  # while no slot exists: no stream will ever carry these
        load.run(10)
        audit_clean(pipeline, "the resync after the slot was dropped under the connector")
        wait_for(lambda: "no longer exists although it streamed 1 table(s)" in connector_log(pipeline),
                 "the one line naming the cause")

        # (2) dropped while the connector is stopped (what docs/operations.md recommends after
        # an invalidation or a restore): writes and deletes meanwhile are in no slot
        pipeline.stop_connector()
        load.run(15)
        load.delete_some(5)
        pipeline.sql("SELECT pg_drop_replication_slot(%s)", (slot,))
        missing, phase = slot_status(pipeline)
        assert missing is not None and missing.state == "missing", missing
        assert phase.startswith("waiting for a resync (slot missing)"), phase
        assert "missing: the connector creates it again" in cli_status(pipeline)
        port = with_metrics(pipeline)
        pipeline.start_connector()
        audit_clean(pipeline, "the resync after the slot was dropped while the connector was stopped")
        recreated = wait_for(
            lambda: metric_value(port, f'vectorizer_connector_slot_recreated_total{{reason="dropped",slot="{slot}"}}'),
            "the slot re-creation metric")
        assert recreated == 1.0
        resyncs = metric_value(port, f'vectorizer_connector_snapshots_total{{reason="slot_dropped",slot="{slot}"}}')
        assert resyncs == 1.0
        info = connector_status(pipeline.url)
        assert info["slot_state"] == "ok" and info["recreated"]["reason"] == "dropped"
        assert info["recreated"]["count"] == 2
        (table,) = info["tables"]
        assert table["status"] == "streaming" and table["snapshot_reason"] == "slot_dropped"
        status_json = json.loads(cli_status(pipeline, "--json"))
        (slot_json,) = [s for s in status_json["slots"] if s["name"] == slot]
        assert slot_json["recreated_reason"] == "dropped" and slot_json["recreations"] == 2
    finally:
        pipeline.stop()


def test_invalidated_slot_is_dropped_recreated_and_resynced(
        restartable_postgres: EmbeddedPostgres, kafka_bootstrap_servers: str, tmp_path: Path) -> None:
    url = create_database(restartable_postgres.url, "lifecycle")
    pipeline = make_pipeline(url, kafka_bootstrap_servers, tmp_path, CONFIG)
    load = Load(pipeline, random.Random(34))
    load.run(30)
    pipeline.start()
    slot = slot_of(pipeline)
    try:
        audit_clean(pipeline, "the first snapshot")
        pipeline.stop_connector()
        # a small WAL budget for slots, in effect from the restart on
        run_sql(restartable_postgres.url, "ALTER SYSTEM SET max_slot_wal_keep_size = '1MB'")
        restartable_postgres.restart()
        load.run(20)
        load.delete_some(6)

        def invalidated() -> bool:
            # more WAL than the budget, a segment switch, and the checkpoint that invalidates
            for _ in range(3):
                pipeline.sql("SELECT pg_logical_emit_message(false, 'filler', repeat('x', 1000000))")
            pipeline.sql("SELECT pg_switch_wal()")
            pipeline.sql("CHECKPOINT")
            rows = pipeline.sql("SELECT wal_status FROM pg_replication_slots WHERE slot_name = %s",
                                (slot,))
            return bool(rows) and rows[0][0] == "lost"
        wait_for(invalidated, "the stopped connector's slot invalidated", timeout=60, interval=0.2)
        lost, phase = slot_status(pipeline)
        assert lost is not None and lost.state == "lost" and lost.invalidation_reason == "wal_removed"
        assert phase.startswith("waiting for a resync (slot lost)"), phase
        assert "lost (wal_removed): the connector drops it" in cli_status(pipeline)
        # the new slot must not run into the tiny budget while the test writes on
        run_sql(restartable_postgres.url, "ALTER SYSTEM RESET max_slot_wal_keep_size")
        run_sql(restartable_postgres.url, "SELECT pg_reload_conf()")

        port = with_metrics(pipeline)
        pipeline.start_connector()
        load.run(10)
        audit_clean(pipeline, "the resync after the slot was invalidated")
        log = connector_log(pipeline)
        assert "was invalidated by PostgreSQL (wal_removed" in log, log[-3000:]
        assert wait_for(lambda: metric_value(
            port, f'vectorizer_connector_slot_recreated_total{{reason="wal_removed",slot="{slot}"}}'),
            "the slot re-creation metric") == 1.0
        info = connector_status(url)
        assert info["slot_state"] == "ok" and info["invalidation_reason"] is None
        assert info["recreated"]["reason"] == "wal_removed"
        assert [t["snapshot_reason"] for t in info["tables"]] == ["slot_invalidated"]
        # one new session did it: not START_REPLICATION retried on the lost slot
        assert log.count("connector session failed") == 0, log[-3000:]
    finally:
        pipeline.stop()


def test_vectorizer_dropped_and_created_again_in_two_migrations(
        fresh_database_url: str, kafka_bootstrap_servers: str, tmp_path: Path) -> None:
    """The new vectorizer's consumer group reads the topic from offset 0, old events included;
    its snapshot's closing truncate removes the rows deleted while no vectorizer existed."""
    pipeline = make_pipeline(fresh_database_url, kafka_bootstrap_servers, tmp_path, CONFIG)
    load = Load(pipeline, random.Random(56))
    load.run(30)
    pipeline.start()
    slot = slot_of(pipeline)
    try:
        audit_clean(pipeline, "the first vectorizer")
        # with the connector running: it sees the gap (drops its slot with the last vectorizer)
        migrate(pipeline, drop_vectorizer(pipeline))
        wait_for(lambda: not pipeline.sql("SELECT 1 FROM pg_replication_slots WHERE slot_name = %s",
                                          (slot,)), "the connector dropping its slot")
        load.delete_some(6)
        load.run(10)
        created = migrate(pipeline, create_vectorizer(pipeline))
        assert created is not None and created != pipeline.vectorizer_id
        pipeline.vectorizer_id = created
        load.run(10)
        audit_clean(pipeline, "the vectorizer created again (connector running)")

        # with the connector stopped: drop_vectorizer drops the inactive slot itself, and the
        # connector only ever sees the new vectorizer on the table it recorded
        pipeline.stop_connector()
        migrate(pipeline, drop_vectorizer(pipeline))
        load.delete_some(6)
        load.run(10)
        created = migrate(pipeline, create_vectorizer(pipeline))
        assert created is not None
        pipeline.vectorizer_id = created
        pipeline.start_connector()
        load.run(10)
        audit_clean(pipeline, "the vectorizer created again (connector stopped)")
        (table,) = connector_status(pipeline.url)["tables"]
        assert table["snapshot_reason"] == "vectorizer_recreated"
        assert "no longer exists although" not in connector_log(pipeline)  # not a lost slot
    finally:
        pipeline.stop()


def test_vectorizer_or_table_and_vectorizer_recreated_in_one_transaction(
        fresh_database_url: str, kafka_bootstrap_servers: str, tmp_path: Path) -> None:
    """The old publication's walsender skips what commits after the swap, and the connector
    confirms past it: only a snapshot of the new incarnation can bring those changes."""
    pipeline = make_pipeline(fresh_database_url, kafka_bootstrap_servers, tmp_path, CONFIG)
    load = Load(pipeline, random.Random(78))
    load.run(30)
    pipeline.start()
    try:
        audit_clean(pipeline, "the first vectorizer")
        old = pipeline.vectorizer_id
        created = migrate(pipeline, drop_vectorizer(pipeline), create_vectorizer(pipeline))
        assert created is not None and created != old
        pipeline.vectorizer_id = created
        load.delete_some(5)  # right after the swap
        load.run(20)
        audit_clean(pipeline, "the vectorizer swapped in one transaction")
        wait_for(lambda: f"every vectorizer of public.{pipeline.table} was created again"
                 in connector_log(pipeline), "the log line naming the new incarnation")

        # the table itself dropped and created again (a new OID) with its vectorizer
        created = migrate(pipeline, drop_vectorizer(pipeline), recreate_table(pipeline, load, 25),
                          create_vectorizer(pipeline))
        assert created is not None
        pipeline.vectorizer_id = created
        load.delete_some(5)
        load.run(20)
        audit_clean(pipeline, "the table and its vectorizer re-created in one transaction")
        wait_for(lambda: f"source table public.{pipeline.table} was dropped and created again"
                 in connector_log(pipeline), "the log line naming the re-created table")
        (table,) = connector_status(pipeline.url)["tables"]
        assert table["snapshot_reason"] == "table_recreated"
        assert "Traceback" not in connector_log(pipeline)
    finally:
        pipeline.stop()
