"""``destination=DestinationColumnConfig(...)``: one embedding per row, in a column of the source.

Two levels, both against the real Postgres: the pipeline in-process, fed events whose
transactions really wrote the rows (the write guard, truncates, the worker's own write coming
back), and the whole stack, connector and worker as separate processes with a local
OpenAI-protocol server counting every input it embeds (no loop, no re-embedding, updates,
deletes).
"""

from __future__ import annotations

import asyncio
import json
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import psycopg
import pytest
from psycopg import sql

from infra.faults import Pipeline, create_in_migration, migration, run_sql
from pgai_orm.catalog.report import read_versions
from pgai_orm.configuration import (
    ChunkingNoneConfig,
    ChunkingRecursiveCharacterTextSplitterConfig,
    DestinationColumnConfig,
    EmbeddingLocalConfig,
    EmbeddingOpenaiConfig,
    FormattingPythonTemplateConfig,
    IndexingHnswConfig,
    LoadingColumnConfig,
    TextIndexingFullTextConfig,
    VectorizerConfig,
)
from pgai_orm.embedders import create_embedder
from pgai_orm.events import RowChange, Transaction, Truncate, canonical_key
from processors.errors_sink import ErrorSink
from processors.pipeline import Pipeline as BatchPipeline
from processors.pipeline import VersionSpec
from tests.fake_providers._server import fake_vector
from tests.fake_providers.openai_server import FakeOpenAIServer
from tests.support.polling import wait_for

KEY_ENV = "DESTINATION_TEST_KEY"
DIMS = 32


def _table(url: str) -> str:
    table = f"products_{uuid.uuid4().hex[:8]}"
    run_sql(url, sql.SQL("CREATE TABLE {} (id int PRIMARY KEY, title text, description text,"
                         " views int NOT NULL DEFAULT 0)").format(sql.Identifier(table)))
    return table


def _column_config(embedding: Any) -> VectorizerConfig:
    return VectorizerConfig(
        embedding=embedding, loading=LoadingColumnConfig("description"),
        chunking=ChunkingNoneConfig(), formatting=FormattingPythonTemplateConfig("$title: $chunk"),
        destination=DestinationColumnConfig("description_embedding"))


def _create(url: str, table: str, config: VectorizerConfig, **options: Any) -> int:
    options.setdefault("destination", config.destination)
    return int(migration(url, lambda op: create_in_migration(op, table, config, **options)))


def _vectors(url: str, table: str) -> dict[int, np.ndarray | None]:
    rows = run_sql(url, sql.SQL("SELECT id, description_embedding::text FROM {}")
                   .format(sql.Identifier(table)))
    return {i: None if v is None else np.array(json.loads(v), dtype=np.float32) for i, v in rows}


def _xmins(url: str, table: str) -> dict[int, str]:
    return dict(run_sql(url, sql.SQL("SELECT id, xmin::text FROM {}").format(sql.Identifier(table))))


# -- the operation and the catalog -------------------------------------------------------------


def test_create_adds_the_column_and_no_store(fresh_database_url: str) -> None:
    url = fresh_database_url
    table = _table(url)
    vid = _create(url, table, _column_config(EmbeddingLocalConfig(dimensions=64)),
                  indexing=IndexingHnswConfig())
    (name, target, view, config), = run_sql(
        url, "SELECT name, target_table, view_table, config FROM vectorizer.vectorizers"
             " WHERE id = %s", (vid,))
    assert name == f"public_{table}_description_embedding"  # pgai's default for a column
    assert target is None and view is None
    assert config["destination"] == {"implementation": "column",
                                     "embedding_column": "description_embedding"}
    (column_type,), = run_sql(url, "SELECT format_type(atttypid, atttypmod) FROM pg_attribute"
                                   " WHERE attrelid = %s::regclass AND attname = 'description_embedding'",
                              (table,))
    assert column_type == "vector(64)"
    assert run_sql(url, "SELECT count(*) FROM pg_indexes WHERE tablename = %s"
                        " AND indexdef LIKE '%%hnsw%%'", (table,)) == [(1,)]
    assert run_sql(url, "SELECT to_regclass(%s)", (f"{table}_embedding_store",)) == [(None,)]
    with psycopg.connect(url) as conn:  # `vectorizer status` reads it like any vectorizer
        (version,) = read_versions(conn, vid)
    assert version.store == "(embedding column of the source)"

    # processing and indexing change in place; what is embedded cannot (one column, one vector)
    migration(url, lambda op: op.alter_vectorizer(name, processing=None,
                                                  indexing=IndexingHnswConfig(m=8, ef_construction=32)))
    with pytest.raises(Exception, match="only processing and indexing can change in place"):
        migration(url, lambda op: op.alter_vectorizer(
            name, embedding=EmbeddingLocalConfig(dimensions=128)))

    # an ALTER TABLE of the source works (no view to drop and rebuild), and a drop keeps the column
    run_sql(url, sql.SQL("ALTER TABLE {} ADD COLUMN sku text").format(sql.Identifier(table)))
    migration(url, lambda op: op.drop_vectorizer(name, drop_all=True))
    assert run_sql(url, "SELECT count(*) FROM pg_attribute WHERE attrelid = %s::regclass"
                        " AND attname = 'description_embedding'", (table,)) == [(1,)]


def test_column_destination_is_checked(fresh_database_url: str) -> None:
    url = fresh_database_url
    table = _table(url)
    with pytest.raises(ValueError, match="ChunkingNoneConfig"):
        VectorizerConfig(loading=LoadingColumnConfig("description"),
                         chunking=ChunkingRecursiveCharacterTextSplitterConfig(),
                         destination=DestinationColumnConfig("e"))
    with pytest.raises(ValueError, match="keyword index lives in a store table"):
        VectorizerConfig(loading=LoadingColumnConfig("description"), chunking=ChunkingNoneConfig(),
                         text_indexing=TextIndexingFullTextConfig(),
                         destination=DestinationColumnConfig("e"))
    with pytest.raises(Exception, match="has no store table or view"):
        migration(url, lambda op: op.create_vectorizer(
            table, loading=LoadingColumnConfig("description"), chunking=ChunkingNoneConfig(),
            destination=DestinationColumnConfig("e"), target_table="x"))
    run_sql(url, sql.SQL("ALTER TABLE {} ADD COLUMN e vector(3)").format(sql.Identifier(table)))
    with pytest.raises(Exception, match=r'column "e" of .* is vector\(3\), but the embedding needs vector\(64\)'):
        _create(url, table, VectorizerConfig(
            embedding=EmbeddingLocalConfig(dimensions=64), loading=LoadingColumnConfig("description"),
            chunking=ChunkingNoneConfig(), destination=DestinationColumnConfig("e")))
    with pytest.raises(Exception, match="is a column the vectorizer reads"):
        _create(url, table, VectorizerConfig(
            loading=LoadingColumnConfig("description"), chunking=ChunkingNoneConfig(),
            destination=DestinationColumnConfig("description")))


# -- the pipeline in-process: the guard, the worker's own write, truncate -----------------------


def _write(url: str, statement: sql.Composable, params: Any = None) -> int:
    """Run one statement in its own transaction; the transaction's 32-bit xid (as pgoutput's)."""
    with psycopg.connect(url) as conn:
        xid = conn.execute("SELECT pg_current_xact_id()::text::bigint % 4294967296").fetchone()[0]  # type: ignore[index]
        conn.execute(statement, params)
    return int(xid)


def _change(op: str, lsn: int, xid: int | None, row: dict[str, Any]) -> RowChange:
    return RowChange.of(op, lsn, {"id": row["id"]}, row,  # type: ignore[arg-type]
                        txn=Transaction(lsn + 1, None, xid))


def test_guard_own_write_and_truncate(fresh_database_url: str) -> None:
    url = fresh_database_url
    table = _table(url)
    ident = sql.Identifier(table)
    config = _column_config(EmbeddingLocalConfig(dimensions=64))
    vid = _create(url, table, config)
    spec = VersionSpec(vid, 1, "public", table, ("id",), config.to_dict())
    embedder = create_embedder(config.embedding)
    pipeline = BatchPipeline(spec, embedder, ErrorSink(vid, 1, None))

    def expected(title: str, description: str) -> np.ndarray:
        return np.asarray(embedder.embed_sync([f"{title}: {description}"])[0], dtype=np.float32)

    async def process(*events: Any) -> Any:
        async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
            return await pipeline.process(conn, list(events))

    def applied(key: int) -> tuple[int, list[str]] | None:
        rows = run_sql(url, "SELECT (lsn - '0/0')::bigint, chunk_hashes FROM vectorizer.applied_state"
                            " WHERE vectorizer_id = %s AND pk = %s::jsonb",
                       (vid, canonical_key({"id": key}).decode()))
        return (int(rows[0][0]), list(rows[0][1])) if rows else None

    row_a = {"id": 1, "title": "boots", "description": "waterproof", "views": 0}
    xid_a = _write(url, sql.SQL("INSERT INTO {} VALUES (1, 'boots', 'waterproof', 0)").format(ident))
    row_b = {**row_a, "description": "leather"}
    xid_b = _write(url, sql.SQL("UPDATE {} SET description = 'leather'").format(ident))

    # the insert's event comes after the row changed again: nothing is written over it, and the
    # row keeps no hash, so its newer event embeds it
    report = asyncio.run(process(_change("insert", 100, xid_a, row_a)))
    assert report.chunks_written == 0
    assert _vectors(url, table)[1] is None
    assert applied(1) == (100, [])
    report = asyncio.run(process(_change("update", 200, xid_b, row_b)))
    assert report.chunks_written == 1 and report.embedding_calls == 1
    np.testing.assert_allclose(_vectors(url, table)[1], expected("boots", "leather"), atol=1e-6)

    # the worker's own UPDATE comes back as an event: no embedding call, no write, the LSN moves
    worker_xid = int(_xmins(url, table)[1])
    before = _xmins(url, table)
    report = asyncio.run(process(_change(
        "update", 300, worker_xid, {**row_b, "description_embedding": "[...]"})))
    assert (report.embedding_calls, report.chunks_written) == (0, 0)
    assert _xmins(url, table) == before
    assert applied(1) is not None and applied(1)[0] == 300  # type: ignore[index]

    # someone else wrote the row after the event (another vectorizer's column, a counter), but
    # nothing the vectorizer reads: the vector is still the row's, so it is written
    xid_c = _write(url, sql.SQL("UPDATE {} SET description = 'suede'").format(ident))
    _write(url, sql.SQL("UPDATE {} SET views = views + 1").format(ident))
    report = asyncio.run(process(_change("update", 400, xid_c, {**row_a, "description": "suede"})))
    assert report.chunks_written == 1
    np.testing.assert_allclose(_vectors(url, table)[1], expected("boots", "suede"), atol=1e-6)

    # a truncate (or a snapshot's closing one) forgets applied rows and never touches the source
    asyncio.run(process(Truncate(500)))
    assert applied(1) is None
    assert run_sql(url, sql.SQL("SELECT count(*) FROM {}").format(ident)) == [(1,)]
    assert _vectors(url, table)[1] is not None


# -- the whole stack: connector and worker as processes ------------------------------------------


def test_column_destination_end_to_end(fresh_database_url: str, kafka_bootstrap_servers: str,
                                       tmp_path: Path) -> None:
    url = fresh_database_url
    table = _table(url)
    ident = sql.Identifier(table)
    rows = {i: (f"item {i}", f"description number {i}") for i in range(1, 6)}
    for i in (1, 2, 3):  # before the vectorizer: they come through the snapshot
        run_sql(url, sql.SQL("INSERT INTO {} (id, title, description) VALUES (%s, %s, %s)")
                .format(ident), (i, *rows[i]))
    with FakeOpenAIServer() as server:
        config = _column_config(EmbeddingOpenaiConfig(
            model="text-embedding-3-small", dimensions=DIMS, base_url=server.base_url,
            api_key_name=KEY_ENV))
        vid = _create(url, table, config)
        pipeline = Pipeline(url, kafka_bootstrap_servers, "public", table, vid, config.to_dict(),
                            f"d{uuid.uuid4().hex[:6]}", tmp_path, env={KEY_ENV: server.api_key},
                            partitions=1)
        pipeline.start()
        try:
            for i in (4, 5):  # while it runs: they come through the stream
                run_sql(url, sql.SQL("INSERT INTO {} (id, title, description) VALUES (%s, %s, %s)")
                        .format(ident), (i, *rows[i]))

            def matches() -> bool:
                vectors = _vectors(url, table)
                return all(vectors.get(i) is not None and np.allclose(
                    vectors[i], fake_vector(f"{t}: {d}", DIMS), atol=1e-6)
                    for i, (t, d) in rows.items())

            wait_for(matches, f"every row's vector in its column\n{pipeline.logs()}", timeout=120)
            written = _xmins(url, table)

            def inputs() -> list[str]:
                return [text for body in server.embedding_requests() for text in body["input"]]

            # A sentinel inserted now comes after every worker write in the (one) partition: once
            # it is embedded, the worker has seen its own writes come back. They caused no
            # embedding call and no write (no loop): each text was embedded exactly once.
            run_sql(url, sql.SQL("INSERT INTO {} (id, title, description) VALUES (99, 's', 'x')")
                    .format(ident))
            wait_for(lambda: _vectors(url, table).get(99) is not None, "the sentinel", timeout=60)
            assert sorted(inputs()) == sorted([f"{t}: {d}" for t, d in rows.values()] + ["s: x"])
            assert {i: x for i, x in _xmins(url, table).items() if i != 99} == written

            # a column the vectorizer does not read: no embedding call, the vector stays
            run_sql(url, sql.SQL("UPDATE {} SET views = 7 WHERE id = 1").format(ident))
            # a changed text: embedded again, written over the old vector
            run_sql(url, sql.SQL("UPDATE {} SET description = 'rewritten' WHERE id = 2").format(ident))
            wait_for(lambda: _vectors(url, table)[2] is not None and np.allclose(
                _vectors(url, table)[2], fake_vector("item 2: rewritten", DIMS), atol=1e-6),
                "the update re-embedded", timeout=60)
            # a delete needs nothing in the source; the pipeline goes on
            run_sql(url, sql.SQL("DELETE FROM {} WHERE id = 3").format(ident))
            run_sql(url, sql.SQL("INSERT INTO {} (id, title, description) VALUES (98, 't', 'y')")
                    .format(ident))
            wait_for(lambda: _vectors(url, table).get(98) is not None, "the second sentinel",
                     timeout=60)
            assert sorted(inputs()) == sorted(
                [f"{t}: {d}" for t, d in rows.values()] + ["s: x", "item 2: rewritten", "t: y"])
            np.testing.assert_allclose(_vectors(url, table)[1], fake_vector("item 1: description number 1", DIMS), atol=1e-6)
            assert run_sql(url, "SELECT step, message FROM vectorizer.errors") == []
        finally:
            pipeline.stop()
