"""Semantic search with the real offline model: ranking, filters, HNSW, dimensions, async."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from datetime import date

import pytest
from sqlalchemy import Engine, Index, select, text
from sqlalchemy.ext.asyncio import AsyncSession, create_async_engine
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

from infra.urls import sqlalchemy_url
from pgai_orm.sqlalchemy import (
    SearchResult,
    VectorizerDimensionsError,
    VectorizerNotFoundError,
    search_statement,
    vectorizer_relationship,
)
from pgai_orm.sqlalchemy.search import embedders, vectorizer_info
from tests.support.orm import count_selects, embed, make_engine, write_embeddings
from tests.support.vectorizers import create_vectorizer


class Base(DeclarativeBase):
    pass


class BlogPost(Base):
    __tablename__ = "blog_posts"
    id: Mapped[int] = mapped_column(primary_key=True)
    title: Mapped[str]
    published: Mapped[date]
    content: Mapped[str]
    content_embeddings = vectorizer_relationship(dimensions=256)


class OtherBase(DeclarativeBase):
    """A second registry: a MetaData holds one Table per name, and WrongSize reuses one."""


class WrongSize(OtherBase):
    """Maps the same store as BlogPost but claims the wrong size."""

    __tablename__ = "wrong_size"
    id: Mapped[int] = mapped_column(primary_key=True)
    content_embeddings = vectorizer_relationship(
        dimensions=384, target_table="blog_posts_embedding_store")


class Unvectorized(OtherBase):
    __tablename__ = "unvectorized"
    id: Mapped[int] = mapped_column(primary_key=True)
    content_embeddings = vectorizer_relationship(dimensions=256)


HNSW = Index("blog_posts_embedding_store_hnsw", BlogPost.content_embeddings.embedding,
             postgresql_using="hnsw",
             postgresql_ops={"embedding": "vector_cosine_ops"})

POSTS = [
    ("Baking sourdough bread", date(2024, 1, 10),
     "Mix flour, water and salt with an active sourdough starter. Let the dough rise slowly "
     "overnight, shape the loaf, and bake it in a hot Dutch oven until the crust is dark and "
     "crackling."),
    ("Training for a marathon", date(2024, 3, 5),
     "Build weekly running mileage gradually and include one long run every weekend. Easy "
     "paces, rest days and good running shoes prevent injuries before race day."),
    ("Indexing in PostgreSQL", date(2024, 6, 20),
     "A B-tree index speeds up database queries that filter or sort by a column. Use EXPLAIN "
     "to check whether the query planner chooses an index scan over a sequential scan."),
    ("Growing tomatoes", date(2024, 9, 1),
     "Plant tomato seedlings in full sun and water the garden soil deeply. Tie the vines to "
     "stakes and pick the fruit when it turns red."),
    ("Bread for beginners", date(2024, 11, 15),
     "A simple yeast bread needs flour, water, salt and yeast. Knead the dough, let it rise, "
     "then bake the loaf until golden."),
]


@pytest.fixture
def engine(fresh_database_url: str) -> Iterator[Engine]:
    engine = make_engine(fresh_database_url)
    Base.metadata.create_all(engine, tables=[BlogPost.__table__])
    create_vectorizer(engine, "blog_posts")
    with Session(engine) as session:
        posts = [BlogPost(title=t, published=d, content=c) for t, d, c in POSTS]
        session.add_all(posts)
        session.flush()
        write_embeddings(session, BlogPost.content_embeddings, posts)
        session.commit()
    yield engine
    engine.dispose()


@pytest.mark.parametrize(("query", "expected"), [
    ("a sourdough starter for a crusty loaf", "Baking sourdough bread"),
    ("running long distances without getting hurt", "Training for a marathon"),
    ("make my SQL queries faster", "Indexing in PostgreSQL"),
    ("vegetable garden in summer", "Growing tomatoes"),
])
def test_search_ranks_the_semantically_right_post_first(engine: Engine, query: str,
                                                        expected: str) -> None:
    with Session(engine) as session:
        results = BlogPost.content_embeddings.search(session, query, limit=5)
    assert isinstance(results[0], SearchResult)
    assert results[0].parent.title == expected, [(r.parent.title, r.chunk) for r in results]
    assert results[0].chunk in results[0].parent.content
    assert [r.distance for r in results] == sorted(r.distance for r in results)
    assert results[0].embedding_row.parent is results[0].parent


def test_search_is_one_statement_and_combines_filters(engine: Engine) -> None:
    emb = BlogPost.content_embeddings
    with Session(engine) as session:
        emb.check_dimensions(session)  # loads the catalog row once; search reuses it
        with count_selects(engine) as selects:
            results = emb.search(
                session, "baking a loaf of bread", limit=5,
                filter=[BlogPost.title.ilike("%bread%"),
                        BlogPost.published.between(date(2024, 6, 1), date(2024, 12, 31))])
            parents = {r.parent.title for r in results}
    assert len(selects) == 1, selects
    assert parents == {"Bread for beginners"}


def test_search_takes_a_vector_and_reuses_one_embedder_per_config(engine: Engine) -> None:
    emb = BlogPost.content_embeddings
    [vector] = embed(["tomato plants and sunshine"])
    with Session(engine) as session:
        by_vector = emb.search(session, vector, limit=1, distance="l2")
        config = vectorizer_info(emb, session).config
    assert by_vector[0].parent.title == "Growing tomatoes"
    assert embedders.get(config) is embedders.get(dict(config))
    with Session(engine) as session, pytest.raises(VectorizerDimensionsError,
                                                   match="3 dimensions"):
        emb.search(session, [0.1, 0.2, 0.3])


def test_order_by_cosine_distance_of_a_query_vector(engine: Engine) -> None:
    emb = BlogPost.content_embeddings
    [vector] = embed(["tomato plants and sunshine"])
    with Session(engine) as session:
        for comparator in ("cosine_distance", "l2_distance", "max_inner_product"):
            rows = session.execute(
                select(BlogPost.title, emb.chunk).join(emb.parent)
                .order_by(getattr(emb.embedding, comparator)(vector)).limit(5)).all()
            assert rows[0].title == "Growing tomatoes", (comparator, rows)


def test_hnsw_index_serves_the_search(engine: Engine) -> None:
    emb = BlogPost.content_embeddings
    [vector] = embed(["bread"])
    with Session(engine) as session:
        HNSW.create(session.connection())
        # On ten rows a scan plus sort is cheapest; these settings make the planner show
        # whether the statement *can* be served by the HNSW index, as it is on real tables.
        session.execute(text("SET LOCAL enable_seqscan = off"))
        session.execute(text("SET LOCAL enable_sort = off"))
        for stmt in (
            select(emb).order_by(emb.embedding.cosine_distance(vector)).limit(5),
            search_statement(emb, vector, limit=5),
            search_statement(emb, vector, limit=5, filter=BlogPost.title.ilike("%bread%")),
        ):
            sql = stmt.compile(dialect=engine.dialect, compile_kwargs={"literal_binds": True})
            plan = "\n".join(session.scalars(text(f"EXPLAIN {sql}")))
            assert f"Index Scan using {HNSW.name}" in plan, plan
        results = emb.search(session, "bread", limit=2)
        assert {r.parent.title for r in results} <= {"Baking sourdough bread",
                                                     "Bread for beginners"}


def test_dimension_mismatch_is_reported_with_both_sizes(engine: Engine) -> None:
    with Session(engine) as session:
        with pytest.raises(VectorizerDimensionsError,
                           match=r"WrongSize.content_embeddings: .*dimensions=384.*dimensions=256"):
            WrongSize.content_embeddings.search(session, "bread")
        with pytest.raises(VectorizerDimensionsError):
            WrongSize.content_embeddings.check_dimensions(session)
        with pytest.raises(VectorizerNotFoundError, match="unvectorized_embedding_store"):
            Unvectorized.content_embeddings.check_dimensions(session)
        # the session is still usable: no statement failed inside its transaction
        assert session.scalar(select(BlogPost.title).limit(1)) is not None


def test_search_without_catalog_says_what_is_missing(fresh_database_url: str) -> None:
    engine = make_engine(fresh_database_url)
    try:
        with Session(engine) as session, pytest.raises(VectorizerNotFoundError,
                                                       match="op.create_vectorizer"):
            BlogPost.content_embeddings.search(session, "bread")
    finally:
        engine.dispose()


def test_async_session_search(engine: Engine, fresh_database_url: str) -> None:
    async def run() -> list[SearchResult]:
        async_engine = create_async_engine(sqlalchemy_url(fresh_database_url))
        try:
            async with AsyncSession(async_engine, expire_on_commit=False) as session:
                await BlogPost.content_embeddings.check_dimensions_async(session)
                return await BlogPost.content_embeddings.search_async(
                    session, "weekend long runs and race day", limit=3,
                    filter=BlogPost.published < date(2024, 6, 1))
        finally:
            await async_engine.dispose()

    results = asyncio.run(run())
    assert results[0].parent.title == "Training for a marathon"
    assert all(r.parent.published < date(2024, 6, 1) for r in results)
    with pytest.raises(TypeError, match="search_async"):
        BlogPost.content_embeddings.search(AsyncSession(), "x")  # type: ignore[arg-type]
