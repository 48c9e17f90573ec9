"""Status and errors in SQL: the views ``vectorizer.vectorizer_status`` and
``vectorizer.vectorizer_errors`` (pgai's ``ai.vectorizer_status`` / ``ai.vectorizer_errors``),
kept current by the worker, so SQL-only users and dashboards see what `vectorizer status` shows.

`vectorizer worker` runs as a separate process against the real Postgres and broker; events are
produced the way the connector produces them (:mod:`tests.support.worker`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg.rows import dict_row

from pgai_orm.lsn import format_lsn
from tests.support.configs import local_config
from tests.support.vectorizers import install_catalog
from tests.support.worker import TEXT, Source, make_source, wait_for, worker

CONFIG = local_config(dimensions=64)
#: pgai's ai.vectorizer_queue_pending caps its count past this many and shows the max bigint
PGAI_CAP = 10_000


@pytest.fixture
def database(fresh_database_url: str) -> str:
    install_catalog(fresh_database_url)
    return fresh_database_url


def status(source: Source) -> dict[str, Any]:
    with psycopg.connect(source.url, autocommit=True, row_factory=dict_row) as conn:
        row = conn.execute("SELECT * FROM vectorizer.vectorizer_status WHERE id = %s",
                           (source.vectorizer_id,)).fetchone()
    assert row is not None
    return row


def errors(source: Source) -> list[dict[str, Any]]:
    with psycopg.connect(source.url, autocommit=True, row_factory=dict_row) as conn:
        return conn.execute("SELECT * FROM vectorizer.vectorizer_errors WHERE id = %s"
                            " ORDER BY error_id", (source.vectorizer_id,)).fetchall()


def test_status_view_shows_the_store_errors_and_progress(
        database: str, kafka_bootstrap_servers: str, tmp_path: Path) -> None:
    source = make_source(database, kafka_bootstrap_servers, CONFIG)
    row = status(source)
    name = f"public_{source.table}_embedding"
    assert (row["name"], row["source_table"], row["target_table"], row["view"]) == (
        name, f"public.{source.table}", f"public.{source.table}_embedding_store",
        f"public.{source.table}_embedding")
    assert (row["serving_version"], row["paused"], row["disabled"]) == (1, False, False)
    assert row["pending_items"] is None  # no worker measured it yet: unknown, not 0
    assert (row["error_rows"], row["errors"]) == (0, 0)

    with worker(source, log=tmp_path / "worker.log"):
        for i in range(1, 4):
            source.upsert(i, title=f"post {i}", content=TEXT)
        # no title: the template cannot format this row, so it is recorded as a format error
        source.send_row(4, "insert", {"id": 4, "content": TEXT, "views": 0})
        source.flush()
        last = source.lsn

        def caught_up() -> bool:
            row = status(source)
            return (row["pending_items"] == 0 and row["last_applied_lsn"] == format_lsn(last)
                    and row["error_rows"] == 1)

        wait_for(caught_up, "the view to show the batch applied and the failed row")
    row = status(source)
    assert row["last_applied_at"] is not None and row["pending_measured_at"] is not None
    assert row["errors"] == 1
    (error,) = errors(source)
    assert (error["name"], error["version"], error["pk"], error["step"]) == (name, 1, {"id": 4},
                                                                              "format")
    assert error["message"] and error["recorded"] is not None and error["lsn"] is not None
    assert source.store_matches_source()


def test_pending_is_the_exact_count_past_pgais_cap_while_paused(
        database: str, kafka_bootstrap_servers: str, tmp_path: Path) -> None:
    source = make_source(database, kafka_bootstrap_servers, CONFIG)
    name = f"public_{source.table}_embedding"
    source.sql("SELECT vectorizer.disable_vectorizer_schedule(%s)", (name,))  # pgai's spelling
    events = PGAI_CAP + 2_345
    for i in range(1, events + 1):
        source.send_row(i, "insert", {"id": i, "title": "t", "content": "short text", "views": 0})
    source.flush()
    with worker(source, log=tmp_path / "worker.log"):
        # the worker serves nothing of a paused vectorizer but measures what waits for it
        wait_for(lambda: status(source)["pending_items"] == events,
                 f"pending_items to count all {events} events waiting in Kafka", timeout=90)
    row = status(source)
    assert (row["paused"], row["disabled"]) == (True, True)
    assert row["last_applied_lsn"] is None  # nothing was embedded
    assert source.store_rows() == []
