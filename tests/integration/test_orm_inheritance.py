"""Abstract bases, mixins, single- and joined-table inheritance: right table, no leaked columns."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime

import pytest
from sqlalchemy import Engine, ForeignKey, func, select
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

from pgai_orm.sqlalchemy import vectorizer_relationship
from tests.support.orm import make_engine, write_embeddings
from tests.support.vectorizers import create_vectorizer

STORE_COLUMNS = {"embedding_uuid", "id", "chunk_seq", "chunk", "embedding"}


class Base(DeclarativeBase):
    pass


class TimeStamped(Base):
    __abstract__ = True
    created_at: Mapped[datetime] = mapped_column(server_default=func.now())


class SearchableMixin:
    """A plain mixin carrying the vectorizer: each class using it gets its own store."""

    content_embeddings = vectorizer_relationship(dimensions=256)


class Post(SearchableMixin, TimeStamped):
    __tablename__ = "posts"
    id: Mapped[int] = mapped_column(primary_key=True)
    kind: Mapped[str]
    title: Mapped[str]
    content: Mapped[str]
    __mapper_args__ = {"polymorphic_on": "kind", "polymorphic_identity": "post"}


class Announcement(Post):
    """Single-table inheritance: shares the posts store."""

    __mapper_args__ = {"polymorphic_identity": "announcement"}


class Review(Post):
    """Joined-table inheritance with a vectorizer of its own on its own table."""

    __tablename__ = "reviews"
    id: Mapped[int] = mapped_column(ForeignKey("posts.id"), primary_key=True)
    verdict: Mapped[str]
    verdict_embeddings = vectorizer_relationship(dimensions=256)
    __mapper_args__ = {"polymorphic_identity": "review"}


class Note(SearchableMixin, Base):
    __tablename__ = "notes"
    id: Mapped[int] = mapped_column(primary_key=True)
    title: Mapped[str]
    content: Mapped[str]


def test_generated_models_carry_only_store_columns() -> None:
    for model in (Post.content_embeddings, Note.content_embeddings,
                  Review.verdict_embeddings):
        assert set(model.__table__.c.keys()) == STORE_COLUMNS, model
    assert Post.content_embeddings.__name__ == "PostContentEmbeddings"
    assert Note.content_embeddings.__name__ == "NoteContentEmbeddings"
    assert Review.verdict_embeddings.__name__ == "ReviewVerdictEmbeddings"


def test_subclasses_share_their_parents_store() -> None:
    assert Announcement.content_embeddings is Post.content_embeddings
    assert Review.content_embeddings is Post.content_embeddings
    assert Review.verdict_embeddings.__table__.name == "reviews_embedding_store"
    assert Note.content_embeddings.__table__.name == "notes_embedding_store"


@pytest.fixture
def engine(fresh_database_url: str) -> Iterator[Engine]:
    engine = make_engine(fresh_database_url)
    Base.metadata.create_all(engine, tables=[Post.__table__, Review.__table__])
    create_vectorizer(engine, "posts")
    create_vectorizer(engine, "reviews", chunk_column="verdict", template="$chunk")
    with Session(engine) as session:
        posts = [
            Post(title="Hello", content="A first post. It says hello."),
            Announcement(title="Closed Monday", content="The shop is closed on Monday."),
            Review(title="Espresso grinder", content="Burrs are conical. Steel is hardened.",
                   verdict="Worth buying. Grinds evenly."),
        ]
        session.add_all(posts)
        session.flush()
        write_embeddings(session, Post.content_embeddings, posts)
        write_embeddings(session, Review.verdict_embeddings, [posts[2]],
                         text=lambda r: r.verdict)
        session.commit()
    yield engine
    engine.dispose()


def test_inherited_relationships_load_through_each_subclass(engine: Engine) -> None:
    with Session(engine) as session:
        announcement = session.scalars(select(Announcement)).one()
        assert [r.chunk for r in announcement.content_embeddings] == [
            "The shop is closed on Monday."]
        assert announcement.content_embeddings[0].parent is announcement

        review = session.scalars(select(Review)).one()
        assert [r.chunk for r in review.content_embeddings] == [
            "Burrs are conical.", "Steel is hardened."]
        assert [r.chunk for r in review.verdict_embeddings] == ["Worth buying.",
                                                                "Grinds evenly."]
        assert review.verdict_embeddings[1].parent is review

        polymorphic = session.scalars(
            select(Post).join(Post.content_embeddings).where(
                Post.content_embeddings.chunk.contains("hello"))).all()
        assert [type(p) for p in polymorphic] == [Post]
