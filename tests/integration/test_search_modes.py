"""Keyword and hybrid search, one hit per parent, and the hit's fields, on the real Postgres.

The posts are hand-made so the two rankings disagree: one post names an identifier
(``frobnicate_level``) no model has seen, others are about the same topic in other words. The
fusion is checked against reciprocal rank fusion computed here from the two single-mode
rankings, so the test pins the arithmetic, not a quality figure.
"""

from __future__ import annotations

import asyncio
import re
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import date
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, event, select
from sqlalchemy.ext.asyncio import AsyncSession, create_async_engine
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

from infra.urls import sqlalchemy_url
from pgai_orm.configuration import TextIndexingFullTextConfig
from pgai_orm.sqlalchemy import SearchResult, VectorizerTextIndexError, vectorizer_relationship
from tests.support.orm import make_engine, write_embeddings
from tests.support.vectorizers import create_vectorizer


class Base(DeclarativeBase):
    pass


class Post(Base):
    __tablename__ = "posts"
    id: Mapped[int] = mapped_column(primary_key=True)
    title: Mapped[str]
    published: Mapped[date]
    content: Mapped[str]
    content_embeddings = vectorizer_relationship(dimensions=256)


class Note(Base):
    """A second vectorizer, without a keyword index."""

    __tablename__ = "notes"
    id: Mapped[int] = mapped_column(primary_key=True)
    title: Mapped[str]
    content: Mapped[str]
    content_embeddings = vectorizer_relationship(dimensions=256)


POSTS = [
    ("Baking sourdough bread", date(2024, 1, 10),
     "Mix flour, water and salt with an active sourdough starter. Let the dough rise slowly "
     "overnight. Bake the loaf in a hot Dutch oven until the crust is dark."),
    ("Bread for beginners", date(2024, 11, 15),
     "A simple yeast bread needs flour, water, salt and yeast. Knead the dough and let it rise. "
     "Bake the loaf until golden."),
    ("Retry settings", date(2024, 5, 2),
     "Set frobnicate_level in the config file to control how often a request is retried. "
     "A higher frobnicate_level waits longer between attempts. The default suits most servers."),
    ("Retries in old versions", date(2023, 2, 1),
     "Version one read frobnicate_level from the environment. It has moved to the config file."),
    ("Training for a marathon", date(2024, 3, 5),
     "Build weekly running mileage gradually. Include one long run every weekend. Rest days "
     "prevent injuries."),
    ("Indexing in PostgreSQL", date(2024, 6, 20),
     "A B-tree index speeds up queries that filter by a column. Use EXPLAIN to see whether the "
     "planner chooses an index scan."),
]


@pytest.fixture
def engine(fresh_database_url: str) -> Iterator[Engine]:
    engine = make_engine(fresh_database_url)
    Base.metadata.create_all(engine, tables=[Post.__table__, Note.__table__])
    create_vectorizer(engine, "posts", text_indexing=TextIndexingFullTextConfig())
    create_vectorizer(engine, "notes")
    with Session(engine) as session:
        posts = [Post(title=t, published=d, content=c) for t, d, c in POSTS]
        notes = [Note(title="a note", content="Bread rises. Frobnicate_level is a setting.")]
        session.add_all([*posts, *notes])
        session.flush()
        write_embeddings(session, Post.content_embeddings, posts)
        write_embeddings(session, Note.content_embeddings, notes)
        session.commit()
    yield engine
    engine.dispose()


@contextmanager
def count_statements(engine: Engine) -> Iterator[list[str]]:
    """Every statement the engine sends while the block runs (a CTE starts with WITH)."""
    statements: list[str] = []

    def record(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        statements.append(statement)

    event.listen(engine, "before_cursor_execute", record)
    try:
        yield statements
    finally:
        event.remove(engine, "before_cursor_execute", record)


def rrf(rankings: list[tuple[float, list[Any]]], k: int) -> dict[Any, float]:
    """Reciprocal rank fusion of ``(weight, ids best first)`` rankings."""
    scores: dict[Any, float] = {}
    for weight, ids in rankings:
        for rank, item in enumerate(ids, 1):
            scores[item] = scores.get(item, 0.0) + weight / (k + rank)
    return scores


def best_first(scores: dict[Any, float]) -> list[Any]:
    return sorted(scores, key=lambda item: (-scores[item], item))


def test_keyword_mode_finds_the_exact_identifier_without_embedding(engine: Engine) -> None:
    emb = Post.content_embeddings
    with Session(engine) as session:
        emb.check_dimensions(session)
        with count_statements(engine) as selects:
            hits = emb.search(session, "frobnicate_level", mode="keyword", limit=5)
    assert len(selects) == 1, selects
    assert {h.parent.title for h in hits} == {"Retry settings", "Retries in old versions"}
    assert all("frobnicate_level" in h.chunk for h in hits)
    assert all(h.distance is None for h in hits)
    assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)
    assert hits[0].score > 0


def test_hybrid_is_reciprocal_rank_fusion_of_both_rankings(engine: Engine) -> None:
    emb = Post.content_embeddings
    window, k = 8, 10
    query = "how often is a request retried, frobnicate_level"
    with Session(engine) as session:
        emb.check_dimensions(session)
        vector = [h.embedding_row.embedding_uuid
                  for h in emb.search(session, query, limit=window)]
        keyword = [h.embedding_row.embedding_uuid
                   for h in emb.search(session, query, mode="keyword", limit=window)]
        with count_statements(engine) as selects:
            hybrid = emb.search(session, query, mode="hybrid", limit=5, candidates=window,
                                rrf_k=k, vector_weight=2.0, keyword_weight=0.5,
                                keyword_match="any")
    assert len(selects) == 1, selects
    expected = rrf([(2.0, vector), (0.5, keyword)], k)
    assert [h.embedding_row.embedding_uuid for h in hybrid] == best_first(expected)[:5]
    for hit in hybrid:
        assert hit.score == pytest.approx(expected[hit.embedding_row.embedding_uuid])
        assert hit.distance is not None  # hybrid hits carry their vector distance too
    assert [h.score for h in hybrid] == sorted((h.score for h in hybrid), reverse=True)


def test_filters_apply_inside_every_ranking(engine: Engine) -> None:
    emb = Post.content_embeddings
    recent = Post.published >= date(2024, 1, 1)
    with Session(engine) as session:
        for mode in ("vector", "keyword", "hybrid"):
            for grouped in (False, True):
                hits = emb.search(session, "frobnicate_level retries", mode=mode, limit=10,
                                  filter=recent, group_by_parent=grouped)
                assert hits, (mode, grouped)
                assert all(h.parent.published >= date(2024, 1, 1) for h in hits), (mode, grouped)
                assert "Retries in old versions" not in {h.parent.title for h in hits}
        hits = emb.search(session, "bread", mode="hybrid", limit=10,
                          filter=[recent, Post.title.ilike("%bread%")])
    assert {h.parent.title for h in hits} == {"Baking sourdough bread", "Bread for beginners"}


@pytest.mark.parametrize("mode", ["vector", "keyword", "hybrid"])
def test_group_by_parent_returns_each_parent_once_with_its_best_chunks(
        engine: Engine, mode: str) -> None:
    emb = Post.content_embeddings
    query = "bake the bread loaf with flour"
    with Session(engine) as session:
        chunks = emb.search(session, query, mode=mode, limit=20)
        emb.check_dimensions(session)
        with count_statements(engine) as selects:
            grouped = emb.search(session, query, mode=mode, limit=2, group_by_parent=True,
                                 chunks_per_parent=2)
        page_two = emb.search(session, query, mode=mode, limit=2, offset=2,
                              group_by_parent=True)
        four = emb.search(session, query, mode=mode, limit=4, group_by_parent=True)
    assert len(selects) == 1, selects
    ids = [h.parent.id for h in grouped]
    assert len(ids) == len(set(ids)) == 2
    assert len({c.parent.id for c in chunks}) < len(chunks), "some post has several chunks"
    for hit in grouped:
        assert 1 <= len(hit.chunks) <= 2
        assert hit.chunks[0] is hit.embedding_row
        assert all(c.parent is hit.parent for c in hit.chunks)
    assert any(len(h.chunks) == 2 for h in grouped)
    assert [h.score for h in four] == sorted((h.score for h in four), reverse=True)
    assert [h.parent.id for h in four] == ids + [h.parent.id for h in page_two]
    if mode != "hybrid":  # a parent's score is its best chunk's
        best: dict[int, float] = {}
        for c in chunks:
            best[c.parent.id] = max(best.get(c.parent.id, c.score), c.score)
        for hit in four:
            assert hit.score == pytest.approx(best[hit.parent.id])


def test_grouped_hybrid_fuses_parent_ranks(engine: Engine) -> None:
    emb = Post.content_embeddings
    query = "retry settings frobnicate_level"
    with Session(engine) as session:
        vector = emb.search(session, query, limit=100, group_by_parent=True)
        keyword = emb.search(session, query, mode="keyword", limit=100, group_by_parent=True)
        hybrid = emb.search(session, query, mode="hybrid", limit=3, group_by_parent=True,
                            keyword_match="any")
    expected = rrf([(1.0, [h.parent.id for h in vector]), (1.0, [h.parent.id for h in keyword])],
                   60)
    assert [h.parent.id for h in hybrid] == best_first(expected)[:3]
    assert hybrid[0].parent.title == "Retry settings"


def test_hits_carry_key_parent_distance_and_score(engine: Engine) -> None:
    emb = Post.content_embeddings
    with Session(engine) as session:
        hits = emb.search(session, "sourdough starter", limit=3)
        by_long_name = emb.search(session, "sourdough starter", limit=3,
                                  distance="cosine_distance")
        for short, long in (("l2", "l2_distance"), ("inner_product", "max_inner_product"),
                            ("l1", "l1_distance")):
            assert ([h.embedding_row.embedding_uuid for h in emb.search(session, "dough",
                                                                        distance=short)]
                    == [h.embedding_row.embedding_uuid for h in emb.search(session, "dough",
                                                                           distance=long)])
        with pytest.raises(ValueError, match="distance: must be one of"):
            emb.search(session, "x", distance="hamming")  # type: ignore[arg-type]
    hit = hits[0]
    assert isinstance(hit, SearchResult)
    assert hit.id == hit.parent.id == hit.key["id"] == hit.embedding_row.id
    assert hit.parent.title == "Baking sourdough bread"
    assert hit.score == pytest.approx(1 - hit.distance)  # cosine similarity
    assert [h.distance for h in hits] == sorted(h.distance for h in hits)
    assert [h.embedding_row.embedding_uuid for h in hits] == [
        h.embedding_row.embedding_uuid for h in by_long_name]
    with pytest.raises(AttributeError, match="key columns: id"):
        _ = hit.title


def test_max_distance_min_score_and_offset(engine: Engine) -> None:
    emb = Post.content_embeddings
    with Session(engine) as session:
        everything = emb.search(session, "sourdough bread", limit=50)
        cut = everything[3].distance
        near = emb.search(session, "sourdough bread", limit=50, max_distance=cut)
        strong = emb.search(session, "frobnicate_level", mode="keyword", limit=50,
                            min_score=0.0001)
        weak_cut = emb.search(session, "frobnicate_level", mode="keyword", limit=50,
                              min_score=10.0)
        paged = emb.search(session, "sourdough bread", limit=3, offset=3)
    assert near and all(h.distance <= cut for h in near)
    assert len(near) == len([h for h in everything if h.distance <= cut])
    assert strong and not weak_cut
    assert [h.embedding_row.embedding_uuid for h in paged] == [
        h.embedding_row.embedding_uuid for h in everything[3:6]]


def test_keyword_modes_without_index_name_the_option(engine: Engine) -> None:
    with Session(engine) as session:
        for mode in ("keyword", "hybrid"):
            with pytest.raises(VectorizerTextIndexError,
                               match=r"Note.content_embeddings: .*text_indexing="
                                     r"TextIndexingFullTextConfig\(\)"):
                Note.content_embeddings.search(session, "bread", mode=mode)
        assert Note.content_embeddings.search(session, "bread")  # vector mode works
        with pytest.raises(ValueError, match="needs the query text"):
            Post.content_embeddings.search(session, [0.0] * 256, mode="hybrid")
        assert session.scalar(select(Post.title).limit(1)) is not None  # no SQL failed


def test_keyword_match_all_and_websearch(engine: Engine) -> None:
    emb = Post.content_embeddings
    with Session(engine) as session:
        any_word = emb.search(session, "frobnicate_level mileage", mode="keyword", limit=20)
        every_word = emb.search(session, "frobnicate_level mileage", mode="keyword", limit=20,
                                keyword_match="all")
        web = emb.search(session, '"dutch oven" -yeast', mode="keyword", limit=20,
                         keyword_match="websearch")
    assert {h.parent.title for h in any_word} >= {"Retry settings", "Training for a marathon"}
    assert every_word == []
    assert [h.parent.title for h in web] == ["Baking sourdough bread"]


def test_async_hybrid_grouped(engine: Engine, fresh_database_url: str) -> None:
    async def run() -> list[SearchResult]:
        async_engine = create_async_engine(sqlalchemy_url(fresh_database_url))
        try:
            async with AsyncSession(async_engine, expire_on_commit=False) as session:
                with pytest.raises(VectorizerTextIndexError):
                    await Note.content_embeddings.search_async(session, "x", mode="keyword")
                return await Post.content_embeddings.search_async(
                    session, "frobnicate_level retries", mode="hybrid", limit=2,
                    group_by_parent=True, filter=Post.published >= date(2024, 1, 1))
        finally:
            await async_engine.dispose()

    hits = asyncio.run(run())
    assert [h.parent.title for h in hits][0] == "Retry settings"
    assert len({h.id for h in hits}) == len(hits) <= 2
    assert all(isinstance(h.embedding_row.embedding_uuid, uuid.UUID) for h in hits)


def test_readme_search_modes_block_runs(engine: Engine, capsys: pytest.CaptureFixture[str]) -> None:
    """The README's hybrid example, on this module's posts (its BlogPost has the same shape)."""
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    match = re.search(r"<!-- test: search-modes -->\n```python\n(.*?)```", readme, re.S)
    assert match, "README has no block marked search-modes"
    namespace: dict[str, Any] = {"engine": engine, "Session": Session, "BlogPost": Post}
    exec(compile(match.group(1), "README.md:search-modes", "exec", dont_inherit=True), namespace)
    lines = capsys.readouterr().out.splitlines()
    assert lines and all(re.match(r"\d\.\d{4}  #\d+ ", line) for line in lines), lines
    assert len(lines) == len({line.split()[1] for line in lines})  # one line per post


class TenantDoc(Base):
    """A composite key, named differently from the columns the SQL labels (``key_0``, ...)."""

    __tablename__ = "tenant_docs"
    tenant: Mapped[str] = mapped_column(primary_key=True)
    doc_id: Mapped[int] = mapped_column(primary_key=True)
    title: Mapped[str]
    content: Mapped[str]
    content_embeddings = vectorizer_relationship(dimensions=256)


def test_composite_keys_group_and_show_on_the_hit(fresh_database_url: str) -> None:
    engine = make_engine(fresh_database_url)
    try:
        Base.metadata.create_all(engine, tables=[TenantDoc.__table__])
        create_vectorizer(engine, "tenant_docs", text_indexing=TextIndexingFullTextConfig())
        with Session(engine) as session:
            # the same doc_ids in both tenants: grouping must use the whole key
            docs = [TenantDoc(tenant=tenant, doc_id=i, title=title, content=content)
                    for tenant in ("acme", "globex")
                    for i, (title, _, content) in enumerate(POSTS[:3], 1)]
            session.add_all(docs)
            session.flush()
            write_embeddings(session, TenantDoc.content_embeddings, docs)
            session.commit()
        emb = TenantDoc.content_embeddings
        with Session(engine) as session:
            hits = emb.search(session, "frobnicate_level", mode="hybrid", limit=10,
                              group_by_parent=True, chunks_per_parent=3)
            acme = emb.search(session, "frobnicate_level", mode="keyword", limit=10,
                              group_by_parent=True, filter=TenantDoc.tenant == "acme")
        keys = [(h.tenant, h.doc_id) for h in hits]
        assert len(keys) == len(set(keys)) == 6  # one hit per (tenant, doc_id)
        assert set(keys[:2]) == {("acme", 3), ("globex", 3)}  # the two "Retry settings"
        assert all(h.key == {"tenant": h.parent.tenant, "doc_id": h.parent.doc_id} for h in hits)
        assert all(c.tenant == h.tenant and c.doc_id == h.doc_id for h in hits for c in h.chunks)
        assert [(h.tenant, h.doc_id) for h in acme] == [("acme", 3)]
    finally:
        engine.dispose()
