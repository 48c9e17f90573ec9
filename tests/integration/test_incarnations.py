"""Identity per incarnation: events of another catalog instance never reach a store.

A database dropped and re-created under the same name (or another server with the same
database names and topic prefix) writes to the same topics; every event names the catalog
instance that wrote it (``source``) and the worker drops those of another one.
"""

from __future__ import annotations

import random
import uuid
from dataclasses import replace
from pathlib import Path

import psycopg
from psycopg import sql

from infra.faults import Load, make_pipeline, run_sql
from infra.pgadmin import create_database, drop_database
from tests.support.configs import local_config
from tests.support.vectorizers import create_vectorizer, install_catalog
from tests.support.worker import TEXT, make_source, wait_for, worker

FOREIGN = "00000000-0000-4000-8000-000000000001"
CAUSES = "give each server its own --topic-prefix"


def test_events_of_another_instance_are_skipped(fresh_database_url: str,
                                                kafka_bootstrap_servers: str,
                                                tmp_path: Path) -> None:
    install_catalog(fresh_database_url)
    source = make_source(fresh_database_url, kafka_bootstrap_servers, local_config())
    own = source.instance_id()
    assert own and own != FOREIGN
    for i in range(1, 11):
        # odd keys: written by another instance (an earlier incarnation, another server)
        source.upsert(i, title=f"post {i}", content=TEXT, source=FOREIGN if i % 2 else own)
    source.upsert(11, title="legacy", content=TEXT)  # no source: an event from before the field
    source.flush()
    log = tmp_path / "worker.log"
    with worker(source, "--loglevel", "info", log=log):
        wait_for(lambda: {r[0] for r in source.store_rows()} == {2, 4, 6, 8, 10, 11},
                 "the own events to reach the store")
        wait_for(lambda: CAUSES in log.read_text(errors="replace"), "the foreign-event warning")
        source.upsert(12, title="marker", content=TEXT, source=own)
        source.flush()
        wait_for(lambda: 12 in {r[0] for r in source.store_rows()}, "a marker behind them")
    assert {r[0] for r in source.store_rows()} == {2, 4, 6, 8, 10, 11, 12}
    text = log.read_text(errors="replace")
    assert FOREIGN in text and text.count(CAUSES) == 1
    assert source.sql("SELECT count(*) FROM vectorizer.errors")[0][0] == 0


def test_a_database_re_created_under_the_same_name_gets_none_of_the_old_rows(
        database_url: str, kafka_bootstrap_servers: str, tmp_path: Path) -> None:
    name = f"reinc_{uuid.uuid4().hex[:12]}"
    config = local_config(dimensions=64)
    url = create_database(database_url, name)
    try:
        install_catalog(url)
        first = make_pipeline(url, kafka_bootstrap_servers, tmp_path / "first", config)
        (tmp_path / "first").mkdir()
        load = Load(first, random.Random(7))
        load.run(30)
        first.start()
        try:
            first.wait_clean("the first incarnation")
            # events the worker has not consumed yet stay in the topic for the next one
            first.stop_worker()
            load.run(30)
            wait_for(lambda: _confirmed(first.url), "the connector to publish them")
        finally:
            first.stop()
        with psycopg.connect(url) as conn:
            old_instance = conn.execute("SELECT id::text FROM vectorizer.instance").fetchone()

        drop_database(database_url, name)
        create_database(database_url, name)
        install_catalog(url)
        run_sql(url, sql.SQL("CREATE TABLE {} (id int PRIMARY KEY, title text, content text,"
                             " views int DEFAULT 0)").format(sql.Identifier(first.table)))
        vectorizer_id = create_vectorizer(url, first.table, config)
        (tmp_path / "second").mkdir()
        second = replace(first, vectorizer_id=vectorizer_id, log_dir=tmp_path / "second",
                         connector=None, worker=None)
        with psycopg.connect(url) as conn:
            assert conn.execute("SELECT id::text FROM vectorizer.instance").fetchone() != old_instance
        Load(second, random.Random(8), next_id=1000).run(20)
        second.start()
        try:
            second.wait_clean("the re-created database")
            store = second.store_table()
            keys = {r[0] for r in run_sql(url, sql.SQL("SELECT DISTINCT id FROM {}")
                                          .format(sql.Identifier(*store)))}
            assert keys and min(keys) >= 1000, "a row of the first incarnation reached the store"
            assert CAUSES in (tmp_path / "second" / "worker.log").read_text(errors="replace")
        finally:
            second.stop()
    finally:
        drop_database(database_url, name)


def _confirmed(url: str) -> bool:
    """The slot confirmed everything written so far (its events are in Kafka)."""
    rows = run_sql(url, "SELECT confirmed_flush_lsn >= pg_current_wal_lsn() FROM pg_replication_slots"
                        " WHERE database = current_database() AND NOT temporary")
    return bool(rows and rows[0][0])
