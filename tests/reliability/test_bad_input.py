"""Bad input: each case gets a clear error in the right place, nothing is lost, the pipeline goes on.

Migration-time errors come from ``vectorizer.create_vectorizer`` (what ``op.create_vectorizer``
runs); values Postgres cannot hold fail at insert time in the application; everything else flows
through the real connector and worker and is audited against the source table.
"""

from __future__ import annotations

import uuid
from pathlib import Path

import orjson
import psycopg
import pytest
from psycopg import sql

from infra.faults import TEXT, Pipeline, run_sql
from infra.ops.render import render_report
from infra.ops.report import read_report
from pgai_orm.configuration import (
    ChunkingRecursiveCharacterTextSplitterConfig,
    EmbeddingLocalConfig,
    FormattingPythonTemplateConfig,
    VectorizerConfig,
)
from tests.fake_providers._server import Fault
from tests.fake_providers.openai_server import FakeOpenAIServer
from tests.support import polling
from tests.support.configs import OPENAI_KEY_ENV, local_config, openai_config
from tests.support.vectorizers import create_vectorizer, install_catalog

pytestmark = pytest.mark.reliability


def _table(url: str, ddl: str) -> str:
    name = f"bad_{uuid.uuid4().hex[:8]}"
    run_sql(url, sql.SQL(ddl).format(t=sql.Identifier(name)))
    return name


def test_migration_time_errors_name_the_problem(fresh_database_url: str) -> None:
    url = fresh_database_url
    install_catalog(url)
    with_pk = _table(url, "CREATE TABLE {t} (id int PRIMARY KEY, title text, content text)")
    no_pk = _table(url, "CREATE TABLE {t} (id int, content text)")

    with pytest.raises(psycopg.Error, match=r"placeholder \$author is not a column"):
        create_vectorizer(url, with_pk, local_config("$author: $chunk"))
    with pytest.raises(psycopg.Error, match="has no primary key"):
        create_vectorizer(url, no_pk, local_config("$chunk"))
    missing_chunk = local_config("$chunk")
    missing_chunk["chunking"]["chunk_column"] = "body"
    with pytest.raises(psycopg.Error, match='column "body" does not exist'):
        create_vectorizer(url, with_pk, missing_chunk)
    with pytest.raises(psycopg.Error, match="does not exist"):
        create_vectorizer(url, "no_such_table", local_config("$chunk"))
    # nothing half-made: no catalog row, and the good one still works afterwards
    assert run_sql(url, "SELECT count(*) FROM vectorizer.vectorizers") == [(0,)]
    assert create_vectorizer(url, with_pk, local_config()) > 0


def test_values_postgres_text_cannot_hold_fail_at_insert_time(fresh_database_url: str) -> None:
    table = _table(fresh_database_url, "CREATE TABLE {t} (id int PRIMARY KEY, content text)")
    insert = sql.SQL("INSERT INTO {} VALUES (%s, %s)").format(sql.Identifier(table))
    with psycopg.connect(fresh_database_url, autocommit=True) as conn:
        # NUL: Postgres text cannot contain 0x00; psycopg refuses before sending
        with pytest.raises(psycopg.DataError, match="NUL"):
            conn.execute(insert, (1, "before\x00after"))
        # and the server refuses it too when it arrives escaped
        with pytest.raises(psycopg.Error, match="0x00|\\\\u0000|null character"):
            conn.execute(sql.SQL("INSERT INTO {} VALUES (2, convert_from('\\x6100'::bytea, 'UTF8'))")
                         .format(sql.Identifier(table)))
        # a lone surrogate is not encodable as UTF-8: the client cannot even send it
        with pytest.raises(UnicodeEncodeError, match="surrogates not allowed"):
            conn.execute(insert, (3, "lone \ud800 surrogate"))
        assert conn.execute(sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(table))
                            ).fetchone() == (0,)


def types_config() -> dict:
    return VectorizerConfig(
        embedding=EmbeddingLocalConfig(model="wordllama", dimensions=64),
        chunking=ChunkingRecursiveCharacterTextSplitterConfig(
            chunk_column="content", chunk_size=2000, chunk_overlap=100, separators=[". ", " "]),
        formatting=FormattingPythonTemplateConfig(
            template="$title n=$n d=$d j=$j num=$num: $chunk"),
    ).to_dict()


def test_odd_text_types_and_a_renamed_column_flow_through(
        fresh_database_url: str, kafka_bootstrap_servers: str, tmp_path: Path) -> None:
    url = fresh_database_url
    table = _table(url, "CREATE TABLE {t} (id int PRIMARY KEY, title text, content text,"
                        " n int, d date, j jsonb, num numeric)")
    config = types_config()
    vectorizer_id = create_vectorizer(url, table, config)
    pipeline = Pipeline(url, kafka_bootstrap_servers, "public", table, vectorizer_id, config,
                        f"b{uuid.uuid4().hex[:6]}", tmp_path)
    t = sql.Identifier(table)
    insert = sql.SQL("INSERT INTO {} (id, title, content, n, d, j, num) VALUES"
                     " (%s, %s, %s, %s, %s, %s::jsonb, %s)").format(t)
    rows = [
        (1, "null content", None, 1, "2026-01-02", '{"a": [1, 2]}', "12.50"),
        (2, "empty content", "", None, None, None, None),
        (3, "big", ("Ten megabytes of text. " * 460_000)[:10_000_000], 3, "1999-12-31",
         '{"nested": {"x": null}}', "-0.000001"),
        (4, "emoji 🎉", "Emoji 👩‍👩‍👧‍👦 and flags 🇺🇦🇯🇵. " * 20, 4, "2026-11-24", "[1, 2, 3]", "1e20"),
        (5, "עברית", "שלום עולם. مرحبا بالعالم. " * 30, 5, "2000-02-29", '"a string"', "NaN"),
        (6, "combining", "e\u0301 a\u0308 n\u0303 Z̤͔ͧ̑̓ä͖̭̈̇lͮ̒ͫǧ̗͚̚o̙̔ͮ̇͐̇. " * 20, 6, "2026-01-01",
         "{}", "0"),
        (7, "one long word", "x" * 200_000, 7, "2026-01-01", "true", "1"),
    ]
    for row in rows:
        run_sql(url, insert, row)
    pipeline.start()
    try:
        audit = pipeline.wait_clean("odd texts and non-text template columns to be embedded",
                                    timeout=120)
        assert audit.rows_checked == len(rows)
        assert not run_sql(url, "SELECT pk, step, message FROM vectorizer.errors")
        store = sql.Identifier(*pipeline.store_table())
        with_chunks = {r[0] for r in run_sql(url, sql.SQL("SELECT DISTINCT id FROM {}").format(store))}
        assert with_chunks == {3, 4, 5, 6, 7}  # NULL and empty text: no chunk, no error

        # the template's column renamed while streaming: the workers follow it by attnum (the
        # row's update is embedded), and one schema error names the rename and the fix
        run_sql(url, sql.SQL("ALTER TABLE {} RENAME COLUMN title TO headline").format(t))
        run_sql(url, sql.SQL("UPDATE {} SET content = 'Renamed column. ' || %s WHERE id = 4")
                .format(t), (TEXT,))
        errors = polling.wait_for(lambda: run_sql(
            url, "SELECT pk, step, message FROM vectorizer.errors WHERE vectorizer_id = %s",
            (vectorizer_id,)), "the schema error of the renamed column", 60, 0.2)
        assert [(pk, step) for pk, step, _ in errors] == [(None, "schema")]
        assert 'column "title"' in errors[0][2] and 'renamed to "headline"' in errors[0][2]
        assert "template='$headline n=$n d=$d j=$j num=$num: $chunk'" in errors[0][2]
        polling.wait_for(lambda: run_sql(url, sql.SQL("SELECT 1 FROM {} WHERE id = 4 AND chunk LIKE"
                                                      " 'Renamed column. %%'").format(store)),
                         "the update after the rename to be embedded", 60, 0.2)
        # renamed back: the schema error goes, a later good update embeds the row
        run_sql(url, sql.SQL("ALTER TABLE {} RENAME COLUMN headline TO title").format(t))
        run_sql(url, sql.SQL("UPDATE {} SET title = 'fixed' WHERE id = 4").format(t))
        run_sql(url, insert, (8, "later good row", TEXT, 8, "2026-01-01", "{}", "1"))
        polling.wait_for(lambda: not run_sql(
            url, "SELECT 1 FROM vectorizer.errors WHERE vectorizer_id = %s", (vectorizer_id,)),
            "the error to clear", 60, 0.2)
        pipeline.wait_clean("the later good rows", timeout=60)
    finally:
        pipeline.stop()


def test_wrong_dimensions_go_to_errors_and_dlq_and_the_pipeline_goes_on(
        fresh_database_url: str, kafka_bootstrap_servers: str, tmp_path: Path) -> None:
    from kafka import KafkaConsumer

    with FakeOpenAIServer() as server:
        config = openai_config(server.base_url)
        url = fresh_database_url
        table = _table(url, "CREATE TABLE {t} (id int PRIMARY KEY, title text, content text)")
        vectorizer_id = create_vectorizer(url, table, config)
        pipeline = Pipeline(url, kafka_bootstrap_servers, "public", table, vectorizer_id, config,
                            f"d{uuid.uuid4().hex[:6]}", tmp_path, env={OPENAI_KEY_ENV: server.api_key})
        insert = sql.SQL("INSERT INTO {} VALUES (%s, %s, %s)").format(sql.Identifier(table))
        run_sql(url, insert, (1, "first", TEXT))
        pipeline.start()
        try:
            pipeline.wait_clean("the first row")
            # the batch call and its row-by-row retry both get vectors one element short
            server.add_fault(Fault(wrong_dimensions=True, times=2))
            run_sql(url, insert, (2, "wrong dims", "A short text."))
            errors = polling.wait_for(lambda: run_sql(
                url, "SELECT pk, step, message FROM vectorizer.errors"), "the dimension error", 60, 0.2)
            assert errors[0][0] == {"id": 2} and errors[0][1] == "embed"
            assert "dimension" in errors[0][2].lower()
            run_sql(url, insert, (3, "later good row", TEXT))
            store = sql.Identifier(*pipeline.store_table())
            polling.wait_for(lambda: 3 in {r[0] for r in run_sql(
                url, sql.SQL("SELECT id FROM {}").format(store))}, "the later good row", 60, 0.2)
            database = run_sql(url, "SELECT current_database()")[0][0]
            from processors.app import topic_name
            consumer = KafkaConsumer(topic_name(pipeline.prefix, database, "public", table) + ".dlq",
                                     bootstrap_servers=kafka_bootstrap_servers,
                                     auto_offset_reset="earliest", consumer_timeout_ms=2000)
            try:
                dead = [(orjson.loads(m.key), orjson.loads(m.value)) for m in consumer]
            finally:
                consumer.close()
            assert [(k, v["step"]) for k, v in dead] == [({"id": 2}, "embed")]
            assert server.api_key not in orjson.dumps([v for _, v in dead]).decode()
        finally:
            pipeline.stop()


def test_source_column_and_source_table_dropped_under_a_vectorizer(
        fresh_database_url: str, kafka_bootstrap_servers: str, tmp_path: Path) -> None:
    """A plain DROP is refused by the vectorizer's view; with CASCADE the row (dropped column) or
    the vectorizer (dropped table) gets an error in vectorizer.errors and the rest goes on."""
    url = fresh_database_url
    ddl = "CREATE TABLE {t} (id int PRIMARY KEY, title text, content text)"
    doomed, other = _table(url, ddl), _table(url, ddl)
    config = local_config()
    doomed_id = create_vectorizer(url, doomed, config)
    other_id = create_vectorizer(url, other, config)
    prefix = f"x{uuid.uuid4().hex[:6]}"
    # one connector and one worker serve both vectorizers of the database
    pipeline = Pipeline(url, kafka_bootstrap_servers, "public", doomed, doomed_id, config,
                        prefix, tmp_path)
    bystander = Pipeline(url, kafka_bootstrap_servers, "public", other, other_id, config,
                         prefix, tmp_path)
    d, o = sql.Identifier(doomed), sql.Identifier(other)
    insert = "INSERT INTO {} VALUES (%s, %s, %s)"
    for i in range(1, 4):
        run_sql(url, sql.SQL(insert).format(d), (i, f"d{i}", TEXT))
        run_sql(url, sql.SQL(insert).format(o), (i, f"o{i}", TEXT))
    pipeline.start()

    def errors(vectorizer_id: int) -> list[tuple]:
        return run_sql(url, "SELECT pk, step, message FROM vectorizer.errors"
                            " WHERE vectorizer_id = %s ORDER BY id", (vectorizer_id,))

    try:
        pipeline.wait_clean("the first rows of the table about to lose its column and itself")
        bystander.wait_clean("the first rows of the other table")

        # without CASCADE, the DDL event trigger (Postgres itself, without the trigger) refuses
        # and names the vectorizer (its view, which is named like it)
        view = f"{doomed}_embedding"
        with pytest.raises(psycopg.errors.DependentObjectsStillExist, match=view):
            run_sql(url, sql.SQL("ALTER TABLE {} DROP COLUMN content").format(d))
        with pytest.raises(psycopg.errors.DependentObjectsStillExist, match=view):
            run_sql(url, sql.SQL("DROP TABLE {}").format(d))

        # the chunked column dropped with CASCADE: the next change of a row is a load error
        # (never mistaken for empty text); like every failed row, it serves no stale chunks.
        # One schema error for the vectorizer says what happened.
        run_sql(url, sql.SQL("ALTER TABLE {} DROP COLUMN content CASCADE").format(d))
        run_sql(url, sql.SQL("UPDATE {} SET title = 'after the drop' WHERE id = 2").format(d))
        found = polling.wait_for(lambda: [e for e in errors(doomed_id) if e[1] == "load"],
                                 "the load error", 60, 0.2)
        assert [(pk, step) for pk, step, _ in found] == [({"id": 2}, "load")]
        assert "content" in found[0][2]
        schema = polling.wait_for(lambda: [e for e in errors(doomed_id) if e[1] == "schema"],
                                  "the schema error", 60, 0.2)
        assert len(schema) == 1 and 'column "content"' in schema[0][2] and "was dropped" in schema[0][2]
        store = sql.Identifier(*pipeline.store_table())
        assert run_sql(url, sql.SQL("SELECT DISTINCT id FROM {} ORDER BY 1").format(store)) == \
            [(1,), (3,)]

        # the table dropped with CASCADE: one 'source' error names it; the connector and the
        # worker go on with the other vectorizer
        run_sql(url, sql.SQL("DROP TABLE {} CASCADE").format(d))
        source_errors = polling.wait_for(
            lambda: [e for e in errors(doomed_id) if e[1] == "source"], "the source error", 60, 0.2)
        assert len(source_errors) == 1 and source_errors[0][0] is None
        assert f"source table public.{doomed}" in source_errors[0][2]
        assert "no longer exists" in source_errors[0][2]
        run_sql(url, sql.SQL(insert).format(o), (4, "o4", "After the drop. " + TEXT))
        run_sql(url, sql.SQL("UPDATE {} SET content = 'Edited. ' || content WHERE id = 1").format(o))
        bystander.wait_clean("the other table's changes after the drop")
        assert pipeline.connector is not None and pipeline.connector.poll() is None
        assert pipeline.worker is not None and pipeline.worker.poll() is None
        assert len([e for e in errors(doomed_id) if e[1] == "source"]) == 1  # recorded once
        assert not errors(other_id)
        report = {vz.name: vz for vz in read_report(url).vectorizers}
        assert [vz.source_rows for vz in report.values()] == [None, 4]
        assert "(table dropped)" in render_report(read_report(url))

        # and the orphaned vectorizer can be dropped the normal way
        run_sql(url, "SELECT vectorizer.drop_vectorizer(%s, NULL, true)",
                (run_sql(url, "SELECT name FROM vectorizer.vectorizers WHERE id = %s",
                         (doomed_id,))[0][0],))
        assert not run_sql(url, sql.SQL("SELECT to_regclass(%s)"), (f"public.{doomed}_embedding_store",))[0][0]
    finally:
        pipeline.stop()
