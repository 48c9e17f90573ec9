"""The keyword index (``text_indexing=``): created with the store, added and changed in place.

It is a generated column of the store (``chunk_tsv``) with a GIN index, so the workers' own
INSERT (explicit columns, as ``processors/store.py`` writes it) fills it, and
``alter_vectorizer(text_indexing=...)`` adds it to a full store without a new config version
and without touching a vector. The offline ``alembic upgrade --sql`` script does the same.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from alembic.migration import MigrationContext
from alembic.operations import Operations
from sqlalchemy import Engine
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

from pgai_orm.alembic import register_operations
from pgai_orm.configuration import (
    EmbeddingLocalConfig,
    TextIndexingFullTextConfig,
    TextIndexingNoneConfig,
)
from pgai_orm.sqlalchemy import VectorizerTextIndexError, vectorizer_relationship
from tests.integration.alembic_project import AlembicProject
from tests.support.orm import make_engine, write_embeddings
from tests.support.vectorizers import create_vectorizer


class Base(DeclarativeBase):
    pass


class Doc(Base):
    __tablename__ = "docs"
    id: Mapped[int] = mapped_column(primary_key=True)
    title: Mapped[str]
    content: Mapped[str]
    content_embeddings = vectorizer_relationship(dimensions=256)


DOCS = [
    ("shutil", "Copy a directory tree with copytree. Pass dirs_exist_ok to merge into it."),
    ("json", "Parse a JSON document into Python objects. The decoder raises JSONDecodeError."),
    ("bread", "Knead the dough and let it rise. Bake the loaf until golden."),
]


def query(url: str, sql: str, params: Any = None) -> list[tuple[Any, ...]]:
    with psycopg.connect(url, autocommit=True) as conn:
        cursor = conn.execute(sql, params)
        return cursor.fetchall() if cursor.description else []


def tsv_column(url: str, table: str) -> tuple[str, str] | None:
    """``(generation expression, GIN index name)`` of ``table.chunk_tsv``, None without it."""
    rows = query(url, """
        SELECT pg_get_expr(d.adbin, d.adrelid),
               (SELECT i.relname FROM pg_index x JOIN pg_class i ON i.oid = x.indexrelid
                 JOIN pg_am am ON am.oid = i.relam
                 WHERE x.indrelid = a.attrelid AND am.amname = 'gin' AND a.attnum = ANY (x.indkey))
          FROM pg_attribute a JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
         WHERE a.attrelid = to_regclass(%s) AND a.attname = 'chunk_tsv' AND a.attgenerated = 's'
    """, (table,))
    return (rows[0][0], rows[0][1]) if rows else None


def alter(url_engine: Engine, name: str, **changes: Any) -> None:
    """``op.alter_vectorizer`` in one transaction, as a migration would run it."""
    register_operations()
    with url_engine.begin() as conn:
        Operations(MigrationContext.configure(conn)).alter_vectorizer(  # type: ignore[attr-defined]  # registered at run time
            name, **changes)


@pytest.fixture
def engine(fresh_database_url: str) -> Iterator[Engine]:
    engine = make_engine(fresh_database_url)
    Base.metadata.create_all(engine, tables=[Doc.__table__])
    yield engine
    engine.dispose()


def load(engine: Engine) -> None:
    with Session(engine) as session:
        docs = [Doc(title=t, content=c) for t, c in DOCS]
        session.add_all(docs)
        session.flush()
        write_embeddings(session, Doc.content_embeddings, docs)
        session.commit()


def test_created_with_the_store_and_filled_by_the_workers_insert(
        engine: Engine, fresh_database_url: str) -> None:
    create_vectorizer(engine, "docs", text_indexing=TextIndexingFullTextConfig(text_config="simple"))
    url = fresh_database_url
    expression, index = tsv_column(url, "docs_embedding_store") or ("", "")
    assert expression == "to_tsvector('simple'::regconfig, chunk)" and index
    assert query(url, "SELECT config->'text_indexing' FROM vectorizer.vectorizers") == [
        ({"implementation": "full_text", "text_config": "simple"},)]
    query(url, "INSERT INTO docs (id, title, content) VALUES (1, 't', 'c')")
    # the processors' statement shape: explicit columns, chunk_tsv left to Postgres
    query(url, "INSERT INTO docs_embedding_store (id, chunk_seq, chunk, embedding) "
               "VALUES (1, 0, 'Running Dogs', array_fill(0.1, ARRAY[256])::vector)")
    assert query(url, "SELECT chunk_tsv::text FROM docs_embedding_store") == [
        ("'dogs':2 'running':1",)]


def test_alter_adds_it_in_place_without_a_version_or_new_vectors(
        engine: Engine, fresh_database_url: str) -> None:
    url = fresh_database_url
    create_vectorizer(engine, "docs", name="docs")
    load(engine)
    before = query(url, "SELECT embedding_uuid, embedding::text FROM docs_embedding_store "
                        "ORDER BY 1")
    with Session(engine) as session:  # caches the catalog row: no keyword index yet
        assert Doc.content_embeddings.search(session, "copy a directory")
        with pytest.raises(VectorizerTextIndexError):
            Doc.content_embeddings.search(session, "copytree", mode="keyword")

    alter(engine, "docs", text_indexing=TextIndexingFullTextConfig())
    assert tsv_column(url, "docs_embedding_store") is not None
    assert query(url, "SELECT embedding_uuid, embedding::text FROM docs_embedding_store "
                      "ORDER BY 1") == before
    assert query(url, "SELECT count(*) FROM docs_embedding_store WHERE chunk_tsv IS NULL "
                      "OR chunk_tsv = ''::tsvector") == [(0,)]
    assert query(url, "SELECT version, status FROM vectorizer.config_versions") == [(1, "active")]
    with Session(engine) as session:  # the cached row is re-read once, not an error
        hits = Doc.content_embeddings.search(session, "copytree", mode="keyword")
    assert [h.parent.title for h in hits] == ["shutil"]

    attnum = query(url, "SELECT attnum FROM pg_attribute WHERE attrelid = "
                        "'docs_embedding_store'::regclass AND attname = 'chunk_tsv'")
    alter(engine, "docs", text_indexing=TextIndexingFullTextConfig())  # same: kept as it is
    assert query(url, "SELECT attnum FROM pg_attribute WHERE attrelid = "
                      "'docs_embedding_store'::regclass AND attname = 'chunk_tsv'") == attnum
    alter(engine, "docs", text_indexing=TextIndexingFullTextConfig(text_config="simple"))
    assert (tsv_column(url, "docs_embedding_store") or ("",))[0] == (
        "to_tsvector('simple'::regconfig, chunk)")

    alter(engine, "docs", text_indexing=TextIndexingNoneConfig())
    assert tsv_column(url, "docs_embedding_store") is None
    assert query(url, "SELECT config->'text_indexing'->>'implementation' FROM "
                      "vectorizer.config_versions") == [("none",)]
    with Session(engine) as session:
        Doc.content_embeddings.check_dimensions(session)  # re-reads the catalog
        with pytest.raises(VectorizerTextIndexError):
            Doc.content_embeddings.search(session, "copytree", mode="keyword")


def test_a_new_version_gets_it_and_so_does_the_serving_store(
        engine: Engine, fresh_database_url: str) -> None:
    url = fresh_database_url
    vectorizer_id = create_vectorizer(engine, "docs", name="docs")
    # as if a worker had applied a row: version 1 is built and keeps serving while 2 builds
    query(url, "INSERT INTO vectorizer.applied_state (vectorizer_id, version, pk, lsn) "
               "VALUES (%s, 1, '{\"id\": 1}', '0/1')", (vectorizer_id,))
    alter(engine, "docs", embedding=EmbeddingLocalConfig(dimensions=128),
          text_indexing=TextIndexingFullTextConfig())
    versions = query(url, "SELECT version, status, target_table, config->'text_indexing' "
                          "FROM vectorizer.config_versions ORDER BY version")
    assert [(v, s, t) for v, s, t, _ in versions] == [
        (1, "active", "docs_embedding_store"), (2, "building", "docs_embedding_store_v2")]
    assert all(c == {"implementation": "full_text", "text_config": "english"}
               for *_, c in versions)
    assert tsv_column(url, "docs_embedding_store_v2") is not None
    assert tsv_column(url, "docs_embedding_store") is not None
    first, second = (tsv_column(url, t) for t in ("docs_embedding_store",
                                                  "docs_embedding_store_v2"))
    assert first and second and first[1] != second[1]  # one index name per store


def test_unknown_text_config_is_refused_by_name(engine: Engine) -> None:
    with pytest.raises(psycopg.Error, match='text search configuration "klingon" does not exist'):
        create_vectorizer(engine, "docs",
                          text_indexing=TextIndexingFullTextConfig(text_config="klingon"))


def test_offline_script_creates_and_alters_it(tmp_path: Path, fresh_database_url: str) -> None:
    project = AlembicProject.create(tmp_path / "alembic", fresh_database_url)
    imports = ("from pgai_orm.configuration import (EmbeddingLocalConfig, "
               "ChunkingRecursiveCharacterTextSplitterConfig, TextIndexingFullTextConfig)")
    project.add_migration("0001", None, """
op.execute("CREATE TABLE a (id int PRIMARY KEY, content text NOT NULL)")
op.execute("CREATE TABLE b (id int PRIMARY KEY, content text NOT NULL)")
op.create_vectorizer(source="a", name="a", embedding=EmbeddingLocalConfig(),
    chunking=ChunkingRecursiveCharacterTextSplitterConfig(chunk_column="content"),
    text_indexing=TextIndexingFullTextConfig(text_config="simple"))
op.create_vectorizer(source="b", name="b", embedding=EmbeddingLocalConfig(),
    chunking=ChunkingRecursiveCharacterTextSplitterConfig(chunk_column="content"))
op.alter_vectorizer("b", text_indexing=TextIndexingFullTextConfig())
""", "pass", imports)
    script = project.upgrade_sql()
    assert '"text_indexing":' in script
    with psycopg.connect(fresh_database_url, autocommit=True) as conn:
        conn.execute(script.encode())
    assert (tsv_column(fresh_database_url, "a_embedding_store") or ("",))[0] == (
        "to_tsvector('simple'::regconfig, chunk)")
    assert (tsv_column(fresh_database_url, "b_embedding_store") or ("",))[0] == (
        "to_tsvector('english'::regconfig, chunk)")
