"""Setup for the ORM tests: engines, real chunks and real vectors in the store.

Processors are not part of these tests, so ``write_embeddings`` plays their role with the real
offline model: it splits the text into sentences, formats ``$title - $chunk`` and embeds through
``create_embedder``, then inserts store rows through the generated embedding class. The
vectorizers themselves come from :func:`tests.support.vectorizers.create_vectorizer`.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.orm import Session

from infra.urls import sqlalchemy_url
from pgai_orm.configuration import EmbeddingLocalConfig
from pgai_orm.embedders import create_embedder


def make_engine(url: str) -> Engine:
    """A SQLAlchemy engine on the psycopg 3 driver for a fixture's ``postgresql://`` URL."""
    return create_engine(sqlalchemy_url(url))


def split_sentences(text: str) -> list[str]:
    """The tests' chunker: one chunk per sentence (each a substring of the text)."""
    return [s for s in re.split(r"(?<=\.)\s+", text.strip()) if s]


_local_embedder = None


def embed(texts: Sequence[str]) -> list[list[float]]:
    """Embed with the real offline default model (wordllama, 256 dimensions)."""
    global _local_embedder
    if _local_embedder is None:
        _local_embedder = create_embedder(EmbeddingLocalConfig())
    return _local_embedder.embed_sync(list(texts))


def write_embeddings(
    session: Session,
    model: Any,
    parents: Sequence[Any],
    *,
    text: Callable[[Any], str] = lambda p: p.content,
    title: Callable[[Any], str] = lambda p: p.title,
    vectors: Callable[[list[str]], list[list[float]]] = embed,
) -> None:
    """Chunk, format, embed and store every parent's text, as a processor would."""
    pk_names = [c.name for c in model.__table__.c if c.name not in
                ("embedding_uuid", "chunk_seq", "chunk", "embedding")]
    rows: list[tuple[Any, int, str]] = []
    for parent in parents:
        rows += [(parent, seq, chunk) for seq, chunk in enumerate(split_sentences(text(parent)))]
    formatted = [f"{title(parent)} - {chunk}" for parent, _, chunk in rows]
    for (parent, seq, chunk), vector in zip(rows, vectors(formatted), strict=True):
        keys = {name: getattr(parent, name) for name in pk_names}
        session.add(model(chunk_seq=seq, chunk=chunk, embedding=vector, **keys))
    session.flush()


@contextmanager
def count_selects(engine: Engine) -> Iterator[list[str]]:
    """Collect every SELECT the engine sends while the block runs."""
    statements: list[str] = []

    def record(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if statement.lstrip().upper().startswith("SELECT"):
            statements.append(statement)

    event.listen(engine, "before_cursor_execute", record)
    try:
        yield statements
    finally:
        event.remove(engine, "before_cursor_execute", record)
