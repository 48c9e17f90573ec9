"""A partitioned source table (``PARTITION BY RANGE``) end to end, connector and worker as
processes: snapshot of every partition, streamed changes in several partitions (publications
publish via the partition root), a row moving to another partition (pgoutput sends a delete of
the old key and an insert of the new one), a partition created and a filled table attached while
streaming, and the partition changes that no change event reports (DETACH, TRUNCATE of one
partition, DROP of one): after each the store is audited against the partitioned table (lost,
duplicated and stale must be 0).
"""

from __future__ import annotations

import uuid
from pathlib import Path

import psycopg
from psycopg import sql

from connector.snapshot import TableReader
from infra.faults import TEXT, Pipeline, run_sql
from tests.support.configs import local_config
from tests.support.vectorizers import create_vectorizer


def _insert(p: Pipeline, rows: list[tuple[int, int]], text: str = TEXT) -> None:
    for id_, k in rows:
        p.sql(sql.SQL("INSERT INTO {} (id, k, title, content) VALUES (%s, %s, %s, %s)")
              .format(sql.Identifier(p.table)), (id_, k, f"doc {id_}", f"{text} Row {id_}."))


def _store_keys(p: Pipeline) -> set[tuple[int, int]]:
    rows = p.sql(sql.SQL("SELECT DISTINCT id, k FROM {}").format(sql.Identifier(*p.store_table())))
    return {(r[0], r[1]) for r in rows}


def test_partitioned_source_snapshot_stream_and_partition_changes(
        fresh_database_url: str, kafka_bootstrap_servers: str, tmp_path: Path) -> None:
    url = fresh_database_url
    table = f"parts_{uuid.uuid4().hex[:8]}"
    t = sql.Identifier(table)

    def part(n: int) -> sql.Identifier:
        return sql.Identifier(f"{table}_{n}")

    run_sql(url, sql.SQL("CREATE TABLE {} (id int, k int, title text, content text, views int"
                         " DEFAULT 0, PRIMARY KEY (id, k)) PARTITION BY RANGE (k)").format(t))
    for n in (0, 1):
        run_sql(url, sql.SQL("CREATE TABLE {} PARTITION OF {} FOR VALUES FROM ({}) TO ({})")
                .format(part(n), t, sql.Literal(n * 100), sql.Literal(n * 100 + 100)))
    config = local_config(dimensions=64)
    vectorizer_id = create_vectorizer(url, table, config)
    p = Pipeline(url, kafka_bootstrap_servers, "public", table, vectorizer_id, config,
                 f"p{uuid.uuid4().hex[:6]}", tmp_path)
    assert run_sql(url, "SELECT pubviaroot FROM pg_publication p JOIN vectorizer.vectorizers v"
                        " ON v.publication_name = p.pubname WHERE v.id = %s", (vectorizer_id,)) == [(True,)]
    _insert(p, [(i, i) for i in range(1, 7)] + [(i, 100 + i) for i in range(7, 13)])

    # the snapshot's row estimate sums the partitions (autovacuum never analyzes the parent)
    for n in (0, 1):
        run_sql(url, sql.SQL("ANALYZE {}").format(part(n)))
    with psycopg.connect(url, autocommit=True) as conn:
        assert TableReader(conn, "public", table, ["id", "k"]).estimate_rows() == 12

    p.start()
    try:
        p.wait_clean("the snapshot of both partitions")

        _insert(p, [(13, 13), (14, 114)])
        p.sql(sql.SQL("UPDATE {} SET content = %s WHERE id IN (2, 8)").format(t), ("New text. " + TEXT,))
        p.sql(sql.SQL("DELETE FROM {} WHERE id IN (3, 9)").format(t))
        # a key that moves to the other partition: a delete of (1, 1) and an insert of (1, 150)
        p.sql(sql.SQL("UPDATE {} SET k = 150, content = %s WHERE id = 1").format(t), ("Moved. " + TEXT,))
        p.wait_clean("changes streamed in both partitions")
        assert {k for k in _store_keys(p) if k[0] == 1} == {(1, 150)}

        # a partition created while streaming: its rows stream like the others
        run_sql(url, sql.SQL("CREATE TABLE {} PARTITION OF {} FOR VALUES FROM (200) TO (300)")
                .format(part(2), t))
        _insert(p, [(20, 220), (21, 221)])
        # a filled table attached: its rows came without a change event, so the table is resynced
        run_sql(url, sql.SQL("CREATE TABLE {} (id int, k int, title text, content text, views int"
                             " DEFAULT 0, PRIMARY KEY (id, k))").format(part(3)))
        run_sql(url, sql.SQL("INSERT INTO {} (id, k, title, content) SELECT i, 300 + i, 'doc ' || i,"
                             " %s || ' Row ' || i FROM generate_series(30, 34) AS i").format(part(3)),
                (TEXT,))
        run_sql(url, sql.SQL("ALTER TABLE {} ATTACH PARTITION {} FOR VALUES FROM (300) TO (400)")
                .format(t, part(3)))
        p.wait_clean("rows of a created and of an attached partition")
        p.sql(sql.SQL("UPDATE {} SET content = %s WHERE id = 31").format(t), ("After attach. " + TEXT,))
        p.wait_clean("a change in the attached partition")

        # detached: its rows are no longer rows of the source, so they leave the store
        run_sql(url, sql.SQL("ALTER TABLE {} DETACH PARTITION {}").format(t, part(1)))
        p.wait_clean("the rows of the detached partition to leave the store")
        assert not {k for k in _store_keys(p) if 100 <= k[1] < 200}
        # TRUNCATE of one partition (not streamed under publish_via_partition_root) and DROP of one
        run_sql(url, sql.SQL("TRUNCATE {}").format(part(2)))
        p.wait_clean("the rows of the truncated partition to leave the store")
        run_sql(url, sql.SQL("DROP TABLE {}").format(part(3)))
        audit = p.wait_clean("the rows of the dropped partition to leave the store")
        assert audit.rows_checked == len(p.source_rows()) == 5  # id 1 had moved to the detached one
        assert {k[0] for k in _store_keys(p)} == {2, 4, 5, 6, 13}
        assert not run_sql(url, "SELECT step, message FROM vectorizer.errors")
    finally:
        p.stop()
