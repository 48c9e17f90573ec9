"""A version-2 catalog with vectorizers in it upgrades to the current version in place.

The version-2 script is a frozen copy (``tests/support/catalog_v2.sql``). The upgrade must keep
the vectorizers and add what version 3 knows: the columns each version reads (by attnum) and the
partitions of a partitioned source, publications that publish via the partition root (a
partitioned source, whose changes never reached the stores before, is resynced), the truncate
triggers and the DDL event triggers.
"""

from __future__ import annotations

from pathlib import Path

import orjson
import psycopg
from psycopg import sql

from pgai_orm.catalog import CATALOG_VERSION, ensure_catalog, installed_version
from pgai_orm.catalog.schema import LOCK_SQL, split_sql_script
from tests.support.configs import local_config

V2_SCRIPT = Path(__file__).resolve().parents[1] / "support" / "catalog_v2.sql"


def _install_v2(conn: psycopg.Connection) -> None:
    with conn.transaction():
        conn.execute(LOCK_SQL)
        for statement in split_sql_script(V2_SCRIPT.read_text(encoding="utf-8")):
            conn.execute(statement)
        conn.execute("INSERT INTO vectorizer.catalog_version (version) VALUES (2)")


def _create_v2_vectorizer(conn: psycopg.Connection, table: str) -> int:
    """What ``op.create_vectorizer`` ran against a version-2 catalog."""
    row = conn.execute(
        "SELECT vectorizer.create_vectorizer(NULL, %s, NULL, NULL, NULL, NULL, NULL, %s::jsonb,"
        " 'content', ARRAY['chunk', 'title'], 64)",
        (table, orjson.dumps(local_config(dimensions=64)).decode())).fetchone()
    assert row is not None
    return int(row[0])


def test_version_2_catalog_upgrades_in_place(fresh_database_url: str) -> None:
    assert CATALOG_VERSION == 4
    with psycopg.connect(fresh_database_url, autocommit=True) as conn:
        _install_v2(conn)
        assert installed_version(conn) == 2
        conn.execute("CREATE TABLE docs (id int PRIMARY KEY, title text, content text)")
        conn.execute("CREATE TABLE parts (id int, k int, title text, content text,"
                     " PRIMARY KEY (id, k)) PARTITION BY LIST (k)")
        conn.execute("CREATE TABLE parts_1 PARTITION OF parts FOR VALUES IN (1)")
        docs, parts = _create_v2_vectorizer(conn, "docs"), _create_v2_vectorizer(conn, "parts")
        assert conn.execute("SELECT bool_or(pubviaroot) FROM pg_publication").fetchone() == (False,)
        for table in ("docs", "parts"):  # as a connector that streamed both left it
            conn.execute("INSERT INTO vectorizer.connector_tables (slot_name, source_schema,"
                         " source_table, topic, status, stream_from_lsn)"
                         " VALUES ('vectorizer_x', 'public', %s, %s, 'streaming', '0/1')", (table, table))

        assert ensure_catalog(conn) is True
        assert installed_version(conn) == CATALOG_VERSION
        assert ensure_catalog(conn) is False  # current: a no-op

        assert conn.execute("SELECT pubname, pubviaroot FROM pg_publication ORDER BY 1").fetchall() == [
            (f"vectorizer_{docs}", True), (f"vectorizer_{parts}", True)]
        # the partitioned source never streamed its partitions' changes: resynced; docs streams on
        assert conn.execute("SELECT source_table FROM vectorizer.connector_tables").fetchall() == [("docs",)]
        columns = dict(conn.execute("SELECT vectorizer_id, source_columns FROM vectorizer.config_versions").fetchall())
        assert columns[docs] == [{"attname": "content", "attnum": 3, "role": "chunk"},
                                 {"attname": "title", "attnum": 2, "role": "template"}]
        assert columns[parts] == [{"attname": "content", "attnum": 4, "role": "chunk"},
                                  {"attname": "title", "attnum": 3, "role": "template"}]
        assert conn.execute("SELECT id, source_partitions = ARRAY['parts_1'::regclass::oid]"
                            " FROM vectorizer.vectorizers ORDER BY id").fetchall() == [(docs, None), (parts, True)]
        assert {r[0] for r in conn.execute(
            "SELECT tgrelid::regclass::text FROM pg_trigger WHERE tgname LIKE 'vectorizer_truncate%'")} == \
            {"parts", "parts_1"}
        assert {r[0] for r in conn.execute(
            "SELECT evtname FROM pg_event_trigger WHERE evtenabled <> 'D'")} >= {
            "vectorizer_ddl_start", "vectorizer_ddl_end"}

        # the upgraded vectorizers behave as new ones: a rename is recorded, an unread column
        # changes type through the views
        conn.execute("ALTER TABLE docs ADD COLUMN n int")
        conn.execute("ALTER TABLE docs ALTER COLUMN n TYPE bigint")
        conn.execute("ALTER TABLE docs RENAME COLUMN content TO body")
        errors = conn.execute("SELECT vectorizer_id, step, message FROM vectorizer.errors").fetchall()
        assert [(e[0], e[1]) for e in errors] == [(docs, "schema")]
        assert 'renamed to "body"' in errors[0][2]
        view = conn.execute(sql.SQL("SELECT * FROM {} LIMIT 0").format(sql.Identifier("docs_embedding")))
        assert [c.name for c in view.description or ()][-2:] == ["body", "n"]
