"""1536-dimension stores (text-embedding-3-small's size) round-trip through the ORM."""

from __future__ import annotations

import math

from sqlalchemy import select
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

from pgai_orm.configuration import EmbeddingOpenaiConfig
from pgai_orm.sqlalchemy import vectorizer_relationship
from tests.support.orm import make_engine, write_embeddings
from tests.support.vectorizers import create_vectorizer


class Base(DeclarativeBase):
    pass


class Paper(Base):
    __tablename__ = "papers"
    id: Mapped[int] = mapped_column(primary_key=True)
    title: Mapped[str]
    content: Mapped[str]
    content_embeddings = vectorizer_relationship(dimensions=1536)


def unit_vectors(texts: list[str]) -> list[list[float]]:
    """Distinct deterministic unit vectors (no OpenAI call: storage is what is tested here)."""
    out = []
    for i, _ in enumerate(texts):
        v = [math.sin((i + 1) * (k + 1) * 0.001) for k in range(1536)]
        norm = math.sqrt(sum(x * x for x in v))
        out.append([x / norm for x in v])
    return out


def test_1536_dimension_vectors_round_trip(fresh_database_url: str) -> None:
    engine = make_engine(fresh_database_url)
    try:
        Base.metadata.create_all(engine, tables=[Paper.__table__])
        create_vectorizer(engine, "papers", embedding=EmbeddingOpenaiConfig(
            model="text-embedding-3-small", dimensions=1536))
        emb = Paper.content_embeddings
        assert emb.__table__.c.embedding.type.dim == 1536
        with Session(engine) as session:
            paper = Paper(title="Attention", content="Transformers use attention. They scale.")
            session.add(paper)
            session.flush()
            write_embeddings(session, emb, [paper], vectors=unit_vectors)
            session.commit()
            emb.check_dimensions(session)
            expected = unit_vectors(["a", "b"])
        with Session(engine) as session:
            rows = session.scalars(select(emb).order_by(emb.chunk_seq)).all()
            assert [len(r.embedding) for r in rows] == [1536, 1536]
            assert max(abs(a - b) for a, b in zip(rows[1].embedding, expected[1], strict=True)) < 1e-6
            nearest = session.scalars(
                select(emb).order_by(emb.embedding.cosine_distance(expected[1])).limit(1)).one()
            assert nearest.chunk == "They scale." and nearest.parent.title == "Attention"
    finally:
        engine.dispose()
