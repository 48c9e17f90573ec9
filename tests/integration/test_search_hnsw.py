"""HNSW settings for one statement: iterative scans keep a selective filter from coming back short.

An HNSW scan returns at most ``hnsw.ef_search`` rows; rows the filter then drops are simply
missing. The store here holds 300 chunks near the query and 5 far from it, and the filter keeps
only the 5: with ``ef_search=10`` and iterative scans off the index yields 10 near chunks and
the filter leaves none; with pgvector 0.8's ``strict_order`` scan (search's default when the
vectorizer has an HNSW index and a filter is given) the scan goes on until 5 rows pass. The
planner is told to avoid sorts and sequential scans, as it would choose the index on a large
table, and EXPLAIN shows it does.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from sqlalchemy import Engine, event, text
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

from pgai_orm.configuration import IndexingHnswConfig, TextIndexingFullTextConfig
from pgai_orm.sqlalchemy import search_statement, vectorizer_relationship
from tests.support.orm import make_engine
from tests.support.vectorizers import create_vectorizer


class Base(DeclarativeBase):
    pass


class Item(Base):
    __tablename__ = "items"
    id: Mapped[int] = mapped_column(primary_key=True)
    kind: Mapped[str]
    content: Mapped[str]
    content_embeddings = vectorizer_relationship(dimensions=256)


NEAR, RARE = 300, 5
QUERY = [1.0] + [0.0] * 255


def vector(rng: random.Random, sign: float) -> list[float]:
    """Along ``sign * QUERY`` with a little noise: distinct points the index can order."""
    return [sign] + [rng.uniform(-0.05, 0.05) for _ in range(255)]


@pytest.fixture
def engine(fresh_database_url: str) -> Iterator[Engine]:
    engine = make_engine(fresh_database_url)
    Base.metadata.create_all(engine, tables=[Item.__table__])
    create_vectorizer(engine, "items", indexing=IndexingHnswConfig(),
                      text_indexing=TextIndexingFullTextConfig(), template="$chunk")
    rng = random.Random(7)
    emb = Item.content_embeddings
    with Session(engine) as session:
        for i in range(NEAR + RARE):
            rare = i >= NEAR
            session.add(Item(id=i, kind="rare" if rare else "common", content=f"item {i}"))
        session.flush()
        for i in range(NEAR + RARE):
            session.add(emb(id=i, chunk_seq=0, chunk=f"item {i} common words",
                            embedding=vector(rng, -1.0 if i >= NEAR else 1.0)))
        session.commit()
    yield engine
    engine.dispose()


@contextmanager
def statements(engine: Engine) -> Iterator[list[str]]:
    sent: list[str] = []

    def record(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        sent.append(statement)

    event.listen(engine, "before_cursor_execute", record)
    try:
        yield sent
    finally:
        event.remove(engine, "before_cursor_execute", record)


def prefer_the_index(session: Session) -> None:
    """What a large table makes the planner do by itself: use the HNSW order, not scan + sort."""
    session.execute(text("SET LOCAL enable_seqscan = off"))
    session.execute(text("SET LOCAL enable_sort = off"))


def test_iterative_scan_fills_the_limit_under_a_selective_filter(engine: Engine) -> None:
    emb = Item.content_embeddings
    rare = Item.kind == "rare"
    with Session(engine) as session:
        prefer_the_index(session)
        short = emb.search(session, QUERY, limit=5, filter=rare, ef_search=10,
                           iterative_scan="off")
        with statements(engine) as sent:
            full = emb.search(session, QUERY, limit=5, filter=rare, ef_search=10)
        hybrid = emb.search(session, "common", mode="hybrid", limit=5, filter=rare,
                            ef_search=10)
    assert len(short) < 5  # the 10 nearest chunks are all common ones
    assert len(full) == 5 and {h.parent.kind for h in full} == {"rare"}
    assert "SET LOCAL hnsw.iterative_scan = strict_order" in sent
    assert "SET LOCAL hnsw.ef_search = 10" in sent
    assert len(hybrid) == 5 and {h.parent.kind for h in hybrid} == {"rare"}


@pytest.mark.parametrize("options", [
    {}, {"mode": "hybrid"}, {"group_by_parent": True}, {"mode": "hybrid", "group_by_parent": True},
])
def test_explain_shows_the_hnsw_index_under_the_filter(engine: Engine,
                                                       options: dict[str, Any]) -> None:
    emb = Item.content_embeddings
    stmt = search_statement(emb, QUERY, keywords="common", limit=5, filter=Item.kind == "rare",
                            **options)
    sql = stmt.compile(dialect=engine.dialect, compile_kwargs={"literal_binds": True})
    with Session(engine) as session:
        prefer_the_index(session)
        session.execute(text("SET LOCAL hnsw.iterative_scan = strict_order"))
        plan = "\n".join(session.scalars(text(f"EXPLAIN {sql}")))
    assert "Index Scan using items_embedding_store_hnsw_idx" in plan, plan
    assert "Filter: ((kind)::text = 'rare'::text)" in plan, plan  # in the same plan


def test_settings_hold_for_the_statement_only(engine: Engine) -> None:
    emb = Item.content_embeddings
    with Session(engine) as session:
        session.execute(text("SET LOCAL hnsw.ef_search = 77"))
        pending = Item(id=10_000, kind="new", content="added before the search")
        session.add(pending)
        hits = emb.search(session, QUERY, limit=3, filter=Item.kind == "common", ef_search=12)
        assert len(hits) == 3
        assert session.scalar(text("SELECT current_setting('hnsw.ef_search')")) == "77"
        assert session.scalar(text("SELECT current_setting('hnsw.iterative_scan')")) == "off"
        session.commit()  # the pending row was flushed before the savepoint, not rolled back
    with Session(engine) as session:
        assert session.get(Item, 10_000) is not None
        # without a filter and within ef_search, nothing is set at all
        with statements(engine) as sent:
            emb.search(session, QUERY, limit=3)
    assert not any(s.startswith(("SET", "SAVEPOINT")) for s in sent), sent
