"""A source with a composite primary key: the store copies both columns and joins on both."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlalchemy import Engine, inspect, select
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

from pgai_orm.sqlalchemy import vectorizer_relationship
from tests.support.orm import make_engine, write_embeddings
from tests.support.vectorizers import create_vectorizer


class Base(DeclarativeBase):
    pass


class Chapter(Base):
    __tablename__ = "chapters"
    book: Mapped[str] = mapped_column(primary_key=True)
    number: Mapped[int] = mapped_column(primary_key=True)
    title: Mapped[str]
    content: Mapped[str]
    content_embeddings = vectorizer_relationship(dimensions=256, parent_kwargs={"lazy": "joined"})


CHAPTERS = [
    ("moby-dick", 1, "Loomings", "Call me Ishmael. Some years ago I went to sea."),
    ("moby-dick", 2, "The Carpet-Bag", "I stuffed a shirt or two into my old carpet-bag."),
    ("walden", 1, "Economy", "I lived alone, in the woods. I earned my living by my hands."),
]


@pytest.fixture
def engine(fresh_database_url: str) -> Iterator[Engine]:
    engine = make_engine(fresh_database_url)
    Base.metadata.create_all(engine, tables=[Chapter.__table__])
    create_vectorizer(engine, "chapters")
    with Session(engine) as session:
        chapters = [Chapter(book=b, number=n, title=t, content=c) for b, n, t, c in CHAPTERS]
        session.add_all(chapters)
        session.flush()
        write_embeddings(session, Chapter.content_embeddings, chapters)
        session.commit()
    yield engine
    engine.dispose()


def test_store_model_copies_every_key_column() -> None:
    table = Chapter.content_embeddings.__table__
    assert {"book", "number"} <= set(table.c.keys())
    assert str(table.c.book.type) == "VARCHAR" and str(table.c.number.type) == "INTEGER"
    assert inspect(Chapter.content_embeddings).relationships["parent"].lazy == "joined"


def test_chunks_navigate_back_to_the_right_parent(engine: Engine) -> None:
    emb = Chapter.content_embeddings
    with Session(engine) as session:
        rows = session.scalars(select(emb).where(emb.chunk.contains("carpet-bag"))).all()
        assert len(rows) == 1
        assert (rows[0].parent.book, rows[0].parent.number) == ("moby-dick", 2)
        # same number, other book: the join must use both key columns
        walden = session.get(Chapter, ("walden", 1))
        assert walden is not None
        assert [r.chunk for r in walden.content_embeddings] == [
            "I lived alone, in the woods.", "I earned my living by my hands."]
        assert all(r.parent is walden for r in walden.content_embeddings)


def test_join_on_composite_key_pairs_each_chunk_with_its_chapter(engine: Engine) -> None:
    emb = Chapter.content_embeddings
    with Session(engine) as session:
        pairs = session.execute(select(Chapter, emb).join(emb).where(Chapter.number == 1)).all()
    assert len(pairs) == 4
    assert all((c.book, c.number) == (e.book, e.number) and e.chunk in c.content
               for c, e in pairs)
