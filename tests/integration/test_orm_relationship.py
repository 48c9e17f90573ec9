"""vectorizer_relationship against a real store made by op.create_vectorizer."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import Engine, MetaData, UniqueConstraint, inspect, select
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, joinedload, mapped_column, selectinload

from pgai_orm.sqlalchemy import EmbeddingModel, vectorizer_relationship
from tests.support.orm import count_selects, make_engine, write_embeddings
from tests.support.vectorizers import create_vectorizer


class Base(DeclarativeBase):
    pass


class BlogPost(Base):
    __tablename__ = "blog_posts"
    id: Mapped[int] = mapped_column(primary_key=True)
    title: Mapped[str]
    content: Mapped[str]
    content_embeddings = vectorizer_relationship(dimensions=256)


class Article(Base):
    """Eager by default, and a second model on the same MetaData."""

    __tablename__ = "articles"
    id: Mapped[int] = mapped_column(primary_key=True)
    title: Mapped[str]
    content: Mapped[str]
    content_embeddings = vectorizer_relationship(dimensions=256, lazy="joined")


class Page(Base):
    """Tuple ``__table_args__`` carrying the schema, the form pgai once failed on."""

    __tablename__ = "pages"
    __table_args__ = (UniqueConstraint("title"), {"schema": "docs"})
    id: Mapped[int] = mapped_column(primary_key=True)
    title: Mapped[str]
    content: Mapped[str]
    content_embeddings = vectorizer_relationship(dimensions=256)


POSTS = {
    "Sourdough at home": "A sourdough starter is flour and water colonised by wild yeast. "
                         "Feed it daily and bake when it doubles within six hours.",
    "Tuning Postgres": "Shared buffers cache table pages in memory. "
                       "Autovacuum removes dead tuples so indexes stay small.",
    "Alpine birds": "The alpine chough nests in cliffs above the tree line. "
                    "Its yellow bill and acrobatic flight are easy to spot.",
}


@pytest.fixture
def engine(fresh_database_url: str) -> Iterator[Engine]:
    engine = make_engine(fresh_database_url)
    with engine.begin() as conn:
        conn.exec_driver_sql("CREATE SCHEMA docs")
    Base.metadata.create_all(
        engine, tables=[BlogPost.__table__, Article.__table__, Page.__table__])
    for source in ("blog_posts", "articles", "docs.pages"):
        create_vectorizer(engine, source)
    with Session(engine) as session:
        for model in (BlogPost, Article, Page):
            parents = [model(title=t, content=c) for t, c in POSTS.items()]
            session.add_all(parents)
            session.flush()
            write_embeddings(session, model.content_embeddings, parents)
        session.commit()
    yield engine
    engine.dispose()


def test_class_access_is_the_generated_embedding_model() -> None:
    model = BlogPost.content_embeddings
    assert model.__name__ == "BlogPostContentEmbeddings"
    assert issubclass(model, EmbeddingModel) and issubclass(model, Base)
    assert model.__table__.name == "blog_posts_embedding_store"
    assert set(model.__table__.c.keys()) == {"embedding_uuid", "id", "chunk_seq", "chunk",
                                             "embedding"}
    assert model.__table__.c.embedding.type.dim == 256
    assert inspect(model).relationships["parent"].mapper.class_ is BlogPost


def test_every_store_table_is_listed_for_autogenerate() -> None:
    assert Base.metadata.info["pgai_managed_tables"] >= {
        "blog_posts_embedding_store", "articles_embedding_store", "docs.pages_embedding_store"}


def _skip_store_tables(obj: Any, name: str | None, type_: str, reflected: bool,
                       compare_to: Any) -> bool:
    """The include_object filter an env.py uses: store tables belong to the pipeline."""
    if type_ == "table":
        fullname = f"{obj.schema}.{name}" if obj.schema else name
        return fullname not in Base.metadata.info.get("pgai_managed_tables", set())
    return True


def test_autogenerate_filter_leaves_store_tables_alone(engine: Engine) -> None:
    with engine.connect() as conn:
        unfiltered = compare_metadata(MigrationContext.configure(conn), Base.metadata)
        filtered = compare_metadata(
            MigrationContext.configure(conn, opts={"include_object": _skip_store_tables}),
            Base.metadata)
    assert any("blog_posts_embedding_store" in repr(diff) for diff in unfiltered)
    assert not any("embedding_store" in repr(diff) for diff in filtered), filtered


def test_rows_carry_an_embedding_and_a_chunk_of_their_post(engine: Engine) -> None:
    with Session(engine) as session:
        posts = session.scalars(select(BlogPost)).all()
        assert len(posts) == 3
        for post in posts:
            chunks = post.content_embeddings
            assert [c.chunk_seq for c in chunks] == list(range(len(chunks))) and chunks
            for row in chunks:
                assert row.chunk in post.content
                assert len(row.embedding) == 256 and all(isinstance(x, float) for x in row.embedding)
                assert row.parent is post


def test_join_filtered_on_title_returns_post_embedding_pairs(engine: Engine) -> None:
    emb = BlogPost.content_embeddings
    with Session(engine) as session:
        pairs = session.execute(
            select(BlogPost, emb).join(emb).where(BlogPost.title.ilike("%postgres%"))
            .order_by(emb.chunk_seq)
        ).all()
    assert [p.title for p, _ in pairs] == ["Tuning Postgres", "Tuning Postgres"]
    assert [e.chunk for _, e in pairs] == ["Shared buffers cache table pages in memory.",
                                           "Autovacuum removes dead tuples so indexes stay small."]
    assert all(e.id == p.id for p, e in pairs)


def test_relationship_attribute_works_in_join_and_filter(engine: Engine) -> None:
    emb = BlogPost.content_embeddings
    with Session(engine) as session:
        titles = session.scalars(
            select(BlogPost.title).join(BlogPost.content_embeddings_relationship)
            .where(emb.chunk.contains("yeast"))
        ).all()
        birds = session.scalars(
            select(emb.chunk).where(emb.parent.has(BlogPost.title == "Alpine birds"))
            .order_by(emb.chunk_seq)).all()
    assert titles == ["Sourdough at home"]
    assert birds == ["The alpine chough nests in cliffs above the tree line.",
                     "Its yellow bill and acrobatic flight are easy to spot."]


def test_joined_loading_issues_no_extra_select(engine: Engine) -> None:
    with Session(engine) as session, count_selects(engine) as selects:
        articles = session.scalars(select(Article)).unique().all()
        after_load = len(selects)
        chunks = [row.chunk for a in articles for row in a.content_embeddings]
    assert after_load == 1 and len(selects) == 1, selects
    assert len(chunks) == 6


@pytest.mark.parametrize("loader", [joinedload, selectinload])
def test_loader_options_load_every_post_up_front(engine: Engine, loader: object) -> None:
    option = loader(BlogPost.content_embeddings_relationship)  # type: ignore[operator]
    with Session(engine) as session, count_selects(engine) as selects:
        posts = session.scalars(select(BlogPost).options(option)).unique().all()
        loaded = len(selects)
        total = sum(len(p.content_embeddings) for p in posts)
        parents = {row.parent.id for p in posts for row in p.content_embeddings}
    assert total == 6 and len(parents) == 3
    assert len(selects) == loaded == (1 if loader is joinedload else 2), selects


def test_tuple_table_args_put_the_store_in_the_schema(engine: Engine) -> None:
    emb = Page.content_embeddings
    assert emb.__table__.fullname == "docs.pages_embedding_store"
    with Session(engine) as session:
        page = session.scalars(select(Page).where(Page.title == "Alpine birds")).one()
        assert [r.chunk_seq for r in page.content_embeddings] == [0, 1]
        assert session.scalar(select(emb.chunk).join(emb.parent).where(Page.id == page.id)
                              .order_by(emb.chunk_seq).limit(1)).startswith("The alpine chough")


def test_metadata_schema_and_explicit_target() -> None:
    class SchemaBase(DeclarativeBase):
        metadata = MetaData(schema="tenant")

    class Ticket(SchemaBase):
        __tablename__ = "tickets"
        id: Mapped[int] = mapped_column(primary_key=True)
        body: Mapped[str]
        body_embeddings = vectorizer_relationship(dimensions=128)
        summary_embeddings = vectorizer_relationship(
            dimensions=64, target_schema="search", target_table="ticket_summaries")

    assert Ticket.body_embeddings.__table__.fullname == "tenant.tickets_embedding_store"
    assert Ticket.summary_embeddings.__table__.fullname == "search.ticket_summaries"
    assert SchemaBase.metadata.info["pgai_managed_tables"] == {
        "tenant.tickets_embedding_store", "search.ticket_summaries"}


def test_instance_attribute_is_read_only() -> None:
    post = BlogPost(title="t", content="c")
    assert post.content_embeddings == []
    with pytest.raises(AttributeError, match="read-only"):
        post.content_embeddings = []


def test_search_when_the_parent_eagerly_joins_its_chunks(engine: Engine) -> None:
    with Session(engine) as session:
        hits = Article.content_embeddings.search(session, "wild yeast in a flour starter",
                                                 limit=3)
        assert hits[0].parent.title == "Sourdough at home"
        assert len({h.embedding_row.embedding_uuid for h in hits}) == 3
        assert all(h.embedding_row in h.parent.content_embeddings for h in hits)
