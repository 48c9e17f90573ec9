"""``destination=DestinationTableConfig(...)``: pgai's names for the store and the view, beside the
seed's ``target_table=`` / ``view_table=`` keywords, and autogenerate for both destinations."""

from __future__ import annotations

import uuid
from typing import Any

import pgvector.sqlalchemy  # noqa: F401  (registers 'vector' for reflection, as a model's import does)
import pytest
from alembic.autogenerate import produce_migrations
from alembic.migration import MigrationContext
from psycopg import sql
from sqlalchemy import MetaData, create_engine

from infra.faults import migration, run_sql
from infra.urls import sqlalchemy_url
from pgai_orm.alembic import declare_vectorizer
from pgai_orm.alembic.operations import CreateVectorizerOp, VectorizerOperationError
from pgai_orm.configuration import (
    ChunkingNoneConfig,
    DestinationColumnConfig,
    DestinationTableConfig,
    EmbeddingLocalConfig,
    LoadingColumnConfig,
)

EMBEDDING = EmbeddingLocalConfig(dimensions=64)
LOADING = LoadingColumnConfig("content")


def _table(url: str) -> str:
    table = f"blog_{uuid.uuid4().hex[:8]}"
    run_sql(url, sql.SQL("CREATE TABLE {} (id int PRIMARY KEY, title text, content text)")
            .format(sql.Identifier(table)))
    return table


def _names(url: str, name: str) -> tuple[Any, ...]:
    return run_sql(url, "SELECT target_schema, target_table, view_schema, view_table"
                        " FROM vectorizer.vectorizers WHERE name = %s", (name,))[0]


def _exists(url: str, qualified: str) -> bool:
    return run_sql(url, "SELECT to_regclass(%s) IS NOT NULL", (qualified,))[0][0]


def test_destination_table_names_store_and_view(fresh_database_url: str) -> None:
    url = fresh_database_url
    table = _table(url)
    run_sql(url, "CREATE SCHEMA emb")
    migration(url, lambda op: op.create_vectorizer(
        table, name="all_names", embedding=EMBEDDING, loading=LOADING,
        destination=DestinationTableConfig(target_schema="emb", target_table=f"{table}_s",
                                           view_schema="emb", view_name=f"{table}_v")))
    assert _names(url, "all_names") == ("emb", f"{table}_s", "emb", f"{table}_v")
    assert _exists(url, f"emb.{table}_s") and _exists(url, f"emb.{table}_v")

    # pgai's base name: view <destination>, store <destination>_store
    migration(url, lambda op: op.create_vectorizer(
        table, name="base_name", embedding=EMBEDDING, loading=LOADING,
        destination=DestinationTableConfig(f"{table}_embeddings")))
    assert _names(url, "base_name") == ("public", f"{table}_embeddings_store", "public",
                                        f"{table}_embeddings")

    # the seed's keywords keep working, and agree with a destination that says the same
    migration(url, lambda op: op.create_vectorizer(
        table, name="keywords", embedding=EMBEDDING, loading=LOADING,
        target_table=f"{table}_k_store", view_table=f"{table}_k",
        destination=DestinationTableConfig(target_table=f"{table}_k_store")))
    assert _names(url, "keywords") == ("public", f"{table}_k_store", "public", f"{table}_k")

    # the store's search works the same whichever way it was named: drop by pgai's name
    migration(url, lambda op: op.drop_vectorizer(name="base_name", drop_all=True))
    assert not _exists(url, f"{table}_embeddings_store")


def test_contradicting_names_are_refused() -> None:
    with pytest.raises(VectorizerOperationError, match="target_table='a' contradicts destination"):
        CreateVectorizerOp("blog", embedding=EMBEDDING, loading=LOADING, target_table="a",
                           destination=DestinationTableConfig(target_table="b"))
    with pytest.raises(VectorizerOperationError, match="has no store table or view"):
        CreateVectorizerOp("blog", loading=LOADING, chunking=ChunkingNoneConfig(),
                           view_table="v", destination=DestinationColumnConfig("e"))
    with pytest.raises(VectorizerOperationError, match="must be DestinationTableConfig"):
        CreateVectorizerOp("blog", loading=LOADING, destination="blog_embeddings")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="longer than 63 bytes"):
        DestinationTableConfig("x" * 60)


def test_autogenerate_knows_both_destinations(fresh_database_url: str) -> None:
    """Declared vectorizers that the catalog already has produce no operation; one missing is
    rendered with its destination, which a migration can run as written."""
    url = fresh_database_url
    table = _table(url)
    column = CreateVectorizerOp(table, loading=LOADING, chunking=ChunkingNoneConfig(),
                                embedding=EMBEDDING, destination=DestinationColumnConfig("content_vec"))
    stored = CreateVectorizerOp(table, embedding=EMBEDDING, loading=LOADING,
                                destination=DestinationTableConfig(f"{table}_e"))
    migration(url, lambda op: [op.invoke(column), op.invoke(stored)])

    metadata = MetaData()
    declare_vectorizer(metadata, table, loading=LOADING, chunking=ChunkingNoneConfig(),
                       embedding=EMBEDDING, destination=DestinationColumnConfig("content_vec"))
    declare_vectorizer(metadata, table, embedding=EMBEDDING, loading=LOADING,
                       destination=DestinationTableConfig(f"{table}_e"))
    declare_vectorizer(metadata, table, name="new_one", loading=LOADING,
                       chunking=ChunkingNoneConfig(), embedding=EMBEDDING,
                       destination=DestinationColumnConfig("title_vec"))
    assert metadata.info["pgai_managed_tables"] == {f"{table}_e_store"}  # no store for a column
    engine = create_engine(sqlalchemy_url(url))
    try:
        with engine.connect() as conn:
            # only the vectorizers are compared here: the tables are not in this MetaData
            context = MigrationContext.configure(conn, opts={
                "target_metadata": metadata,
                "include_name": lambda name, type_, parents: type_ != "table"})
            ops = produce_migrations(context, metadata).upgrade_ops.ops  # type: ignore[union-attr]
    finally:
        engine.dispose()
    created = [op for op in ops if isinstance(op, CreateVectorizerOp)]
    assert [op.name for op in created] == ["new_one"]
    assert len(ops) == 1, ops
    from pgai_orm.alembic.autogenerate import render_create_vectorizer

    class _Context:
        imports: set[str] = set()

    rendered = render_create_vectorizer(_Context(), created[0])  # type: ignore[arg-type]
    assert "destination=DestinationColumnConfig(embedding_column='title_vec')" in rendered
    assert any("DestinationColumnConfig" in line for line in _Context.imports)
