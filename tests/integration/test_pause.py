"""Pause and resume: ``op.disable_vectorizer`` / ``op.enable_vectorizer`` (pgai's
``ai.disable_vectorizer_schedule`` / ``ai.enable_vectorizer_schedule``) and ``vectorizer pause`` /
``vectorizer resume``.

The pipeline runs as processes: the connector and the worker (``infra.faults.Pipeline``), against
the real Postgres and broker. While paused nothing is embedded, the changes wait in Kafka, and
the replication slot keeps advancing (its confirmed_flush_lsn moves past the paused writes);
resume catches up until the store equals the source.
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import psycopg
import pytest
from click.testing import CliRunner
from psycopg import sql

from infra.faults import Load, Pipeline, make_pipeline, migration
from infra.ops.commands import pause_command, resume_command, status_command
from infra.ops.report import add_consumer_lags
from pgai_orm.catalog import report as catalog_report
from pgai_orm.lsn import parse_lsn
from pgai_orm.names import default_slot_name
from tests.support.configs import local_config
from tests.support.polling import wait_for
from tests.support.vectorizers import create_vectorizer

CONFIG = local_config(dimensions=64)


def name_of(pipeline: Pipeline) -> str:
    return str(pipeline.sql("SELECT name FROM vectorizer.vectorizers WHERE id = %s",
                            (pipeline.vectorizer_id,))[0][0])


def confirmed_lsn(pipeline: Pipeline) -> int:
    slot = default_slot_name(pipeline.sql("SELECT current_database()")[0][0])
    rows = pipeline.sql("SELECT confirmed_flush_lsn::text FROM pg_replication_slots"
                        " WHERE slot_name = %s", (slot,))
    return parse_lsn(rows[0][0]) if rows and rows[0][0] else 0


def wal_lsn(pipeline: Pipeline) -> int:
    return parse_lsn(pipeline.sql("SELECT pg_current_wal_insert_lsn()::text")[0][0])


def status_row(pipeline: Pipeline) -> dict[str, Any]:
    with psycopg.connect(pipeline.url, autocommit=True) as conn:
        cur = conn.execute("SELECT * FROM vectorizer.vectorizer_status WHERE id = %s",
                           (pipeline.vectorizer_id,))
        columns = [c.name for c in cur.description or ()]
        row = cur.fetchone()
    assert row is not None
    return dict(zip(columns, row, strict=True))


def measured_lag(pipeline: Pipeline) -> int | None:
    """The serving version's consumer lag as `vectorizer status` measures it from the broker."""
    with psycopg.connect(pipeline.url, autocommit=True) as conn:
        report = catalog_report.read_report(conn, pipeline.prefix)
    add_consumer_lags(report, pipeline.servers)
    (vz,) = [v for v in report.vectorizers if v.name == name_of(pipeline)]
    return vz.versions[0].consumer_lag


def store_state(pipeline: Pipeline) -> list[tuple[Any, ...]]:
    """Every chunk of the store, with its vector: what "nothing was embedded" compares."""
    return pipeline.sql(sql.SQL("SELECT embedding_uuid, chunk, embedding::text FROM {} ORDER BY 1")
                        .format(sql.Identifier(*pipeline.store_table())))


def cli(command: Any, *args: str) -> str:
    result = CliRunner().invoke(command, list(args), catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.output


def test_paused_vectorizer_embeds_nothing_the_slot_advances_and_resume_catches_up(
        fresh_database_url: str, kafka_bootstrap_servers: str, tmp_path: Path) -> None:
    pipeline = make_pipeline(fresh_database_url, kafka_bootstrap_servers, tmp_path, CONFIG)
    load = Load(pipeline, random.Random(5))
    load.run(20)
    pipeline.start()
    try:
        pipeline.wait_clean("before the pause")
        name = name_of(pipeline)
        migration(pipeline.url, lambda op: op.disable_vectorizer(name))
        wait_for(lambda: f"stopped serving vectorizer {pipeline.vectorizer_id} version 1: it is"
                 " paused" in (tmp_path / "worker.log").read_text(errors="replace"),
                 "the worker to stop serving the paused vectorizer")
        store_before = store_state(pipeline)

        load.run(30)
        before_last = wal_lsn(pipeline)
        load.run(1)
        # the connector streamed every paused write into Kafka and confirmed it: no WAL pinned
        wait_for(lambda: confirmed_lsn(pipeline) > before_last,
                 "the slot to advance past the writes made while paused")
        # the workers measure what waits in Kafka, exactly (the SQL view and the broker agree)
        lag = wait_for(lambda: next((n for n in [measured_lag(pipeline)] if n and n >= 31), None),
                       "the 31 paused writes in the topic")
        wait_for(lambda: status_row(pipeline)["pending_items"] == lag,
                 f"vectorizer_status.pending_items to show the {lag} events waiting")
        row = status_row(pipeline)
        assert row["paused"] is True and row["disabled"] is True and row["paused_at"] is not None
        assert row["connector_state"] == "streaming" and row["wal_pending_bytes"] is not None
        assert store_state(pipeline) == store_before  # nothing was embedded while paused
        assert not pipeline.audit().clean
        text = cli(status_command, "--database-url", pipeline.url)
        assert f"vectorizer {name}: serving version 1" in text and ", paused" in text
        assert f"`vectorizer resume {name}`" in text
        (vz,) = json.loads(cli(status_command, "--database-url", pipeline.url,
                               "--json"))["vectorizers"]
        assert vz["paused"] is True and vz["paused_at"]

        out = cli(resume_command, name, "--database-url", pipeline.url)
        assert f"vectorizer {name} is running" in out
        pipeline.wait_clean("after the resume")
        wait_for(lambda: status_row(pipeline)["pending_items"] == 0, "pending back to 0")
        row = status_row(pipeline)
        assert row["paused"] is False and row["paused_at"] is None
        assert parse_lsn(str(row["last_applied_lsn"])) >= before_last  # the last write's
        assert row["last_applied_at"] is not None
        text = cli(status_command, "--database-url", pipeline.url)
        assert ", paused" not in text
    finally:
        pipeline.stop()


def test_pause_and_resume_by_cli_and_by_pgais_sql_names(fresh_database_url: str) -> None:
    url = fresh_database_url
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("CREATE TABLE notes (id int PRIMARY KEY, title text, content text)")
    vectorizer_id = create_vectorizer(url, "notes", CONFIG)

    def paused() -> bool:
        with psycopg.connect(url, autocommit=True) as conn:
            row = conn.execute("SELECT paused FROM vectorizer.vectorizer_status WHERE id = %s",
                               (vectorizer_id,)).fetchone()
        assert row is not None
        return bool(row[0])

    out = cli(pause_command, "public_notes_embedding", "--database-url", url)
    assert "is paused" in out and paused()
    cli(pause_command, "public_notes_embedding", "--database-url", url)  # idempotent
    cli(resume_command, "public_notes_embedding", "--database-url", url)
    assert not paused()
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("SELECT vectorizer.disable_vectorizer_schedule('public_notes_embedding')")
        assert paused()
        conn.execute("SELECT vectorizer.enable_vectorizer_schedule(%s)", (vectorizer_id,))
        assert not paused()
        conn.execute("SELECT vectorizer.disable_vectorizer_schedule(%s)", (vectorizer_id,))
        assert paused()
        with pytest.raises(psycopg.errors.UndefinedObject, match="with id 999 does not exist"):
            conn.execute("SELECT vectorizer.enable_vectorizer_schedule(999)")
    migration(url, lambda op: op.enable_vectorizer("public_notes_embedding"))
    assert not paused()

    result = CliRunner().invoke(pause_command, ["nope", "--database-url", url])
    assert result.exit_code == 1
    assert result.output.strip() == "Error: vectorizer 'nope' does not exist"
    with pytest.raises(Exception, match='vectorizer "nope" does not exist'):
        migration(url, lambda op: op.disable_vectorizer("nope"))
