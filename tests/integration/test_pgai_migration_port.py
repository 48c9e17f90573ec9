"""A migration written for pgai Vectorizer 0.12 runs here after changing only its imports.

The two migrations below are pgai's own examples (docs/vectorizer/alembic-integration.md and
api-reference.md, "Column destination"), as a pgai user has them, with their ``pgai`` imports.
The test changes nothing but the import lines, runs them with Alembic, runs the connector and
the worker as processes (the OpenAI embedder pointed at a local server speaking OpenAI's
protocol through the SDK's own ``OPENAI_BASE_URL``), and searches both destinations through
the ORM.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from sqlalchemy import Integer, Text, create_engine, text
from sqlalchemy.ext.asyncio import AsyncSession, create_async_engine
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

from infra.faults import Pipeline, run_sql
from infra.urls import sqlalchemy_url
from pgai_orm.sqlalchemy import (
    search_column,
    search_column_async,
    vectorizer_column,
    vectorizer_relationship,
)
from tests.fake_providers._server import fake_vector
from tests.fake_providers.openai_server import FakeOpenAIServer
from tests.integration.alembic_project import AlembicProject
from tests.support.polling import wait_for

#: pgai's table-destination example, verbatim but for the tables it needs
PGAI_TABLE_MIGRATION = '''
from alembic import op
import sqlalchemy as sa
from pgai.vectorizer.configuration import (
    EmbeddingOpenaiConfig,
    ChunkingCharacterTextSplitterConfig,
    FormattingPythonTemplateConfig,
    LoadingColumnConfig,
    DestinationTableConfig
)

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table("blog", sa.Column("id", sa.Integer, primary_key=True),
                    sa.Column("title", sa.Text), sa.Column("content", sa.Text))
    op.create_vectorizer(
        source="blog",
        name="blog_content_embedder",  # Optional custom name for easier reference
        destination=DestinationTableConfig(
            destination='blog_embeddings'
        ),
        loading=LoadingColumnConfig(column_name='content'),
        embedding=EmbeddingOpenaiConfig(
            model='text-embedding-3-small',
            dimensions=768
        ),
        chunking=ChunkingCharacterTextSplitterConfig(
            chunk_size=800,
            chunk_overlap=400,
            separator='.',
            is_separator_regex=False
        ),
        formatting=FormattingPythonTemplateConfig(template='$title - $chunk')
    )


def downgrade() -> None:
    op.drop_vectorizer(name="blog_content_embedder", drop_all=True)
    op.drop_table("blog")
'''

#: pgai's column-destination example (ai.create_vectorizer in api-reference.md) as an Alembic op
PGAI_COLUMN_MIGRATION = '''
from alembic import op
import sqlalchemy as sa
from pgai.vectorizer.configuration import (
    ChunkingNoneConfig,
    DestinationColumnConfig,
    EmbeddingOpenaiConfig,
    LoadingColumnConfig,
)

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table("product_descriptions", sa.Column("id", sa.Integer, primary_key=True),
                    sa.Column("description", sa.Text))
    op.create_vectorizer(
        source="product_descriptions",
        name="product_descriptions_vectorizer",
        loading=LoadingColumnConfig(column_name="description"),
        embedding=EmbeddingOpenaiConfig(model="text-embedding-3-small", dimensions=768),
        chunking=ChunkingNoneConfig(),  # Required for column destination
        destination=DestinationColumnConfig(embedding_column="description_embedding"),
    )


def downgrade() -> None:
    op.drop_vectorizer(name="product_descriptions_vectorizer", drop_all=True)
    op.drop_table("product_descriptions")
'''


def port(migration: str) -> str:
    """The whole port: pgai's import lines become ours."""
    return migration.replace("from pgai.vectorizer.configuration import",
                             "from pgai_orm.configuration import")


class Base(DeclarativeBase):
    pass


class Blog(Base):
    __tablename__ = "blog"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    title: Mapped[str] = mapped_column(Text)
    content: Mapped[str] = mapped_column(Text)
    content_embeddings = vectorizer_relationship(dimensions=768, target_table="blog_embeddings_store")


class Product(Base):
    __tablename__ = "product_descriptions"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    description: Mapped[str] = mapped_column(Text)
    description_embedding = vectorizer_column(768)


async def _search_async(url: str, query: str) -> list[Any]:
    engine = create_async_engine(sqlalchemy_url(url))
    try:
        async with AsyncSession(engine) as session:
            return await search_column_async(Product.description_embedding, session, query, limit=1)
    finally:
        await engine.dispose()


def test_pgai_migrations_port_by_changing_imports(
        fresh_database_url: str, kafka_bootstrap_servers: str, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    url = fresh_database_url
    project = AlembicProject.create(tmp_path / "alembic", url)
    for revision, source in (("0001", PGAI_TABLE_MIGRATION), ("0002", PGAI_COLUMN_MIGRATION)):
        ported = port(source)
        assert ported.replace("pgai_orm.configuration", "pgai.vectorizer.configuration") == source
        (project.root / "versions" / f"{revision}.py").write_text(ported)
    project.upgrade()
    assert run_sql(url, "SELECT name, target_table, view_table FROM vectorizer.vectorizers"
                        " ORDER BY id") == [
        ("blog_content_embedder", "blog_embeddings_store", "blog_embeddings"),
        ("product_descriptions_vectorizer", None, None)]

    posts = {1: ("Postgres", "Logical replication streams every change. Kafka keeps them."),
             2: ("Boots", "Waterproof leather boots for long walks.")}
    products = {1: "A red umbrella that folds small.", 2: "Noise-cancelling headphones."}
    for i, (title, content) in posts.items():
        run_sql(url, "INSERT INTO blog VALUES (%s, %s, %s)", (i, title, content))
    for i, description in products.items():
        run_sql(url, "INSERT INTO product_descriptions (id, description) VALUES (%s, %s)",
                (i, description))

    with FakeOpenAIServer() as server:
        env = {"OPENAI_API_KEY": server.api_key, "OPENAI_BASE_URL": server.base_url}
        for name, value in env.items():
            monkeypatch.setenv(name, value)  # the ORM's query embedding, in this process
        blog_id, blog_config = run_sql(
            url, "SELECT id, config FROM vectorizer.vectorizers WHERE name = 'blog_content_embedder'")[0]
        pipeline = Pipeline(url, kafka_bootstrap_servers, "public", "blog", blog_id, blog_config,
                            "port", tmp_path, env=env)
        pipeline.start()
        try:
            pipeline.wait_clean("the table destination's store equals the blog table", timeout=120)

            def column_filled() -> bool:
                rows = run_sql(url, "SELECT id, description_embedding::text FROM product_descriptions")
                return all(v is not None and np.allclose(
                    np.array(json.loads(v)), fake_vector(products[i], 768), atol=1e-6)
                    for i, v in rows)

            wait_for(column_filled, f"the column destination filled\n{pipeline.logs()}", timeout=120)

            engine = create_engine(sqlalchemy_url(url))
            try:
                with Session(engine) as session:
                    # the exact text of one stored chunk is its own nearest neighbour
                    chunk = session.execute(text(
                        "SELECT chunk FROM blog_embeddings WHERE id = 2 AND chunk_seq = 0")).scalar()
                    hits = Blog.content_embeddings.search(session, f"Boots - {chunk}", limit=1)
                    assert hits[0].parent.id == 2 and hits[0].distance == pytest.approx(0, abs=1e-5)
                    found = search_column(Product.description_embedding, session,
                                          products[1], limit=2)
                    assert [h.id for h in found][0] == 1 and found[0].distance == pytest.approx(0, abs=1e-5)
                    assert session.execute(text(
                        "SELECT count(DISTINCT id) FROM blog_embeddings")).scalar() == 2
            finally:
                engine.dispose()
            assert asyncio.run(_search_async(url, products[2]))[0].id == 2
        finally:
            pipeline.stop()
    project.downgrade()
    assert run_sql(url, "SELECT count(*) FROM vectorizer.vectorizers") == [(0,)]
