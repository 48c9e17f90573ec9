"""ALTER TABLE of a source while the pipeline streams, connector and worker as processes.

* ADD COLUMN, DROP COLUMN and ALTER COLUMN ... TYPE of columns the vectorizer does not read just
  work (the DDL event trigger drops the embedding view before and creates it again after, with
  its grants and comment); what would break the vectorizer is refused with a message naming it.
  Without the event triggers the documented procedure (``vectorizer.drop_views`` /
  ``vectorizer.rebuild_views`` around the ALTER) does the same.
* A renamed chunk column is followed by attnum (changes keep being embedded) and one ``schema``
  error names the rename and the fix; the fix (``op.alter_vectorizer`` with the new name) makes a
  version whose replay reads the old events under the old name, and the error goes with the old
  version.
* A renamed primary-key column is followed: keys keep the store's names, never ``{}``.

After each step the store is audited against the source (lost, duplicated, stale must be 0).
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import psycopg
import pytest
from alembic.migration import MigrationContext
from alembic.operations import Operations
from psycopg import sql
from sqlalchemy import create_engine

from infra.faults import TEXT, Load, Pipeline, make_pipeline, run_sql
from infra.urls import sqlalchemy_url
from pgai_orm.alembic import register_operations
from pgai_orm.catalog.report import read_errors, read_report
from pgai_orm.configuration import ChunkingRecursiveCharacterTextSplitterConfig, VectorizerConfig
from tests.support import polling
from tests.support.configs import local_config


def _view_columns(p: Pipeline) -> dict[str, str]:
    rows = p.sql("SELECT a.attname, format_type(a.atttypid, a.atttypmod) FROM pg_attribute a"
                 " WHERE a.attrelid = (SELECT format('%%I.%%I', view_schema, view_table)::regclass"
                 "   FROM vectorizer.vectorizers WHERE id = %s) AND a.attnum > 0 ORDER BY a.attnum",
                 (p.vectorizer_id,))
    return {r[0]: r[1] for r in rows}


def _view(p: Pipeline) -> str:
    return str(p.sql("SELECT format('%%I.%%I', view_schema, view_table) FROM vectorizer.vectorizers"
                     " WHERE id = %s", (p.vectorizer_id,))[0][0])


def _name(p: Pipeline) -> str:
    return str(p.sql("SELECT name FROM vectorizer.vectorizers WHERE id = %s", (p.vectorizer_id,))[0][0])


def test_unread_columns_change_freely_and_breaking_changes_are_refused(
        fresh_database_url: str, kafka_bootstrap_servers: str, tmp_path: Path) -> None:
    p = make_pipeline(fresh_database_url, kafka_bootstrap_servers, tmp_path, local_config(dimensions=64))
    t = sql.Identifier(p.table)
    load = Load(p, random.Random(12))
    load.run(15)
    role = f"reader_{p.table}"
    p.sql(sql.SQL("CREATE ROLE {}").format(sql.Identifier(role)))
    p.sql(f"GRANT SELECT ON {_view(p)} TO {role}")
    p.sql(f"COMMENT ON VIEW {_view(p)} IS 'searchable docs'")

    def view_kept() -> None:
        assert p.sql(f"SELECT has_table_privilege(%s, '{_view(p)}', 'SELECT'),"
                     f" obj_description('{_view(p)}'::regclass)", (role,)) == [(True, "searchable docs")]

    p.start()
    try:
        p.wait_clean("the snapshot")
        p.sql(sql.SQL("ALTER TABLE {} ADD COLUMN note text DEFAULT 'n'").format(t))
        assert "note" in _view_columns(p)  # the view shows every source column, new ones too
        load.run(15)
        p.wait_clean("writes after ADD COLUMN")

        p.sql(sql.SQL("ALTER TABLE {} DROP COLUMN note").format(t))
        p.sql(sql.SQL("ALTER TABLE {} ALTER COLUMN views TYPE bigint").format(t))
        assert "note" not in _view_columns(p) and _view_columns(p)["views"] == "bigint"
        view_kept()
        load.run(15)
        p.wait_clean("writes after DROP COLUMN and ALTER COLUMN TYPE of unread columns")

        # what would break the vectorizer is refused, with the vectorizer named
        with pytest.raises(psycopg.errors.DependentObjectsStillExist, match="chunked by vectorizer"):
            p.sql(sql.SQL("ALTER TABLE {} DROP COLUMN content").format(t))
        with pytest.raises(psycopg.errors.FeatureNotSupported, match="keys its rows by integer"):
            p.sql(sql.SQL("ALTER TABLE {} ALTER COLUMN id TYPE bigint").format(t))
        with pytest.raises(psycopg.errors.DuplicateColumn, match="reserves"):
            p.sql(sql.SQL("ALTER TABLE {} ADD COLUMN chunk text").format(t))

        # without the event triggers (a catalog installed by a non-superuser): the procedure
        p.sql("ALTER EVENT TRIGGER vectorizer_ddl_start DISABLE")
        p.sql("ALTER EVENT TRIGGER vectorizer_ddl_end DISABLE")
        try:
            with pytest.raises(psycopg.errors.FeatureNotSupported, match="used by a view"):
                p.sql(sql.SQL("ALTER TABLE {} ALTER COLUMN views TYPE numeric").format(t))
            with psycopg.connect(p.url) as conn:  # one transaction
                assert conn.execute("SELECT vectorizer.drop_views(%s)", (p.table,)).fetchone() == (1,)
                conn.execute(sql.SQL("ALTER TABLE {} ALTER COLUMN views TYPE numeric").format(t))
                assert conn.execute("SELECT vectorizer.rebuild_views(%s)", (p.table,)).fetchone() == (1,)
        finally:
            p.sql("ALTER EVENT TRIGGER vectorizer_ddl_start ENABLE")
            p.sql("ALTER EVENT TRIGGER vectorizer_ddl_end ENABLE")
        assert _view_columns(p)["views"] == "numeric"
        view_kept()
        load.run(15)
        audit = p.wait_clean("writes after the documented procedure")
        assert audit.rows_checked == len(load.ids)
        assert not p.sql("SELECT step, message FROM vectorizer.errors")
    finally:
        p.stop()


class _RenamedKey(Pipeline):
    """The audit of a source whose key column ``id`` is now called ``doc_id``."""

    def source_rows(self) -> list[dict[str, Any]]:
        rows = super().source_rows()
        return [{**{k: v for k, v in r.items() if k != "doc_id"}, "id": r["doc_id"]} for r in rows]


def _alter_chunk_column(url: str, name: str, config: dict[str, Any], column: str) -> dict[str, Any]:
    """``op.alter_vectorizer(name, chunking=...(chunk_column=column))`` as a migration would; the
    new config (the catalog's form)."""
    chunking = VectorizerConfig.from_dict(config).chunking
    assert isinstance(chunking, ChunkingRecursiveCharacterTextSplitterConfig)
    new = ChunkingRecursiveCharacterTextSplitterConfig(
        chunk_column=column, chunk_size=chunking.chunk_size, chunk_overlap=chunking.chunk_overlap,
        separators=chunking.separators)
    register_operations()
    engine = create_engine(sqlalchemy_url(url))
    try:
        with engine.begin() as conn:
            op: Any = Operations(MigrationContext.configure(conn))
            op.alter_vectorizer(name, chunking=new)
    finally:
        engine.dispose()
    return {**config, "chunking": new.to_dict()}


def test_renamed_chunk_column_and_key_column_are_followed(
        fresh_database_url: str, kafka_bootstrap_servers: str, tmp_path: Path) -> None:
    url = fresh_database_url
    p = make_pipeline(url, kafka_bootstrap_servers, tmp_path, local_config(dimensions=64))
    t = sql.Identifier(p.table)
    load = Load(p, random.Random(34))
    load.run(20)
    name = _name(p)
    p.start()
    try:
        p.wait_clean("the snapshot")

        # the chunk column renamed: changes go on being embedded from the new name ...
        p.sql(sql.SQL("ALTER TABLE {} RENAME COLUMN content TO body").format(t))
        p.config = {**p.config, "chunking": {**p.config["chunking"], "chunk_column": "body"}}
        for i in sorted(load.ids)[:5]:
            p.sql(sql.SQL("UPDATE {} SET body = %s WHERE id = %s").format(t), (f"Renamed {i}. {TEXT}", i))
        p.sql(sql.SQL("INSERT INTO {} (id, title, body) VALUES (1000, 'new', %s)").format(t), (TEXT,))
        load.ids.add(1000)
        p.wait_clean("changes after the rename of the chunk column")
        # ... and one error says so, with the fix
        errors = polling.wait_for(lambda: [e for e in run_sql(
            url, "SELECT pk, step, message FROM vectorizer.errors") if e[1] == "schema"],
            "the schema error of the rename", 30, 0.2)
        assert len(errors) == 1 and errors[0][0] is None
        message = errors[0][2]
        assert 'column "content"' in message and 'renamed to "body"' in message
        assert "chunking=ChunkingRecursiveCharacterTextSplitterConfig(chunk_column='body'" in message
        with psycopg.connect(url, autocommit=True) as conn:
            assert [e["message"] for e in read_errors(conn, name, 10)] == [message]
            assert [v.errors for v in read_report(conn).vectorizers] == [1]

        # the fix: a version that reads "body" replays the topic (the old events carry
        # "content"), takes over, and the error goes with the old version
        p.config = _alter_chunk_column(url, name, p.config, "body")
        polling.wait_for(lambda: run_sql(url, "SELECT config_version FROM vectorizer.vectorizers"
                                              " WHERE id = %s", (p.vectorizer_id,)) == [(2,)],
                         "version 2 to serve", 120, 0.3)
        polling.wait_for(lambda: not run_sql(url, "SELECT 1 FROM vectorizer.errors"),
                         "the schema error to go", 30, 0.2)
        p.wait_clean("version 2 built from old and new events")

        # the primary-key column renamed: keys keep the store's name, never {}
        p.sql(sql.SQL("ALTER TABLE {} RENAME COLUMN id TO doc_id").format(t))
        renamed = _RenamedKey(**{f: getattr(p, f) for f in p.__dataclass_fields__})
        p.connector = p.worker = None  # the processes are the renamed pipeline's now
        try:
            ids = sorted(load.ids)
            renamed.sql(sql.SQL("UPDATE {} SET body = %s WHERE doc_id = %s").format(t),
                        (f"Key renamed. {TEXT}", ids[0]))
            renamed.sql(sql.SQL("DELETE FROM {} WHERE doc_id = %s").format(t), (ids[1],))
            renamed.sql(sql.SQL("INSERT INTO {} (doc_id, title, body) VALUES (2000, 'k', %s)").format(t),
                        (TEXT,))
            load.ids.discard(ids[1])
            load.ids.add(2000)
            audit = renamed.wait_clean("changes after the rename of the key column")
            assert audit.rows_checked == len(load.ids)
            assert not run_sql(url, "SELECT 1 FROM vectorizer.applied_state WHERE pk = '{}'::jsonb")
            assert not run_sql(url, "SELECT step, message FROM vectorizer.errors")
            # a snapshot reads the renamed key column too: forget the table's connector state,
            # as a resync does, and change rows after a kill -9 of the connector
            renamed.kill_connector()
            run_sql(url, "DELETE FROM vectorizer.connector_tables")
            renamed.sql(sql.SQL("UPDATE {} SET body = %s WHERE doc_id = 2000").format(t), ("Again. " + TEXT,))
            renamed.wait_clean("a resync and a change after the rename of the key column")
            assert not run_sql(url, "SELECT 1 FROM vectorizer.applied_state WHERE pk = '{}'::jsonb")
        finally:
            renamed.stop()
    finally:
        p.stop()
