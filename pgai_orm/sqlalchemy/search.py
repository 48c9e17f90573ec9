"""Semantic search over an embedding model: embed the query, rank chunks, return parents.

pgai computes the query vector in SQL (``ai.openai_embed(...)``); here the vectorizer's own
embedder computes it in Python, built from the config in the catalog, so query and stored
vectors share model, dimensions and provider settings. Embedders are cached per embedding config
(loading a model or an HTTP client per query would dominate the search time).

One SELECT does the rest: chunk, parent and distance, with the caller's filters and the vector
ordering together, so Postgres can use the HNSW index and the filters in one plan.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Literal, NamedTuple

from sqlalchemy import ColumnElement, Result, Select, inspect, select
from sqlalchemy.engine import Engine
from sqlalchemy.orm import contains_eager

from pgai_orm.configuration import VectorizerConfig
from pgai_orm.embedders import Embedder, create_embedder
from pgai_orm.sqlalchemy import _catalog
from pgai_orm.sqlalchemy._catalog import VectorizerInfo
from pgai_orm.sqlalchemy.errors import VectorizerDimensionsError

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncSession
    from sqlalchemy.orm import Session

Distance = Literal["cosine", "l2", "inner_product", "l1"]

#: distance name -> pgvector comparator method (and the operator class an index needs)
DISTANCES: dict[str, str] = {
    "cosine": "cosine_distance",  # <=>, vector_cosine_ops
    "l2": "l2_distance",  # <->, vector_l2_ops
    "inner_product": "max_inner_product",  # <#>, vector_ip_ops (negated: smaller is nearer)
    "l1": "l1_distance",  # <+>, vector_l1_ops
}


class SearchResult(NamedTuple):
    """One ranked hit; unpacks as ``(embedding_row, parent, distance)``."""

    embedding_row: Any
    parent: Any
    distance: float

    @property
    def chunk(self) -> str:
        """The text of the matching chunk."""
        return str(self.embedding_row.chunk)


def search_statement(
    model: Any,
    vector: Sequence[float],
    *,
    limit: int,
    filter: ColumnElement[bool] | Sequence[ColumnElement[bool]] | None = None,  # noqa: A002
    distance: Distance = "cosine",
) -> Select[Any]:
    """``SELECT chunk, parent, distance ... WHERE filters ORDER BY distance LIMIT n``."""
    method = DISTANCES.get(distance)
    if method is None:
        raise ValueError(f"distance: must be one of {sorted(DISTANCES)}, got {distance!r}")
    if limit < 1:
        raise ValueError(f"limit: must be >= 1, got {limit}")
    nearness = getattr(model.embedding, method)(list(vector))
    # contains_eager: each hit's ``.parent`` is filled from this same row, no lazy load later
    stmt = (
        select(model, model.__vectorizer__.owner, nearness.label("distance"))
        .join(model.parent)
        .options(contains_eager(model.parent))
    )
    if filter is not None:
        criteria = [filter] if isinstance(filter, ColumnElement) else list(filter)
        stmt = stmt.where(*criteria)
    return stmt.order_by(nearness).limit(limit)


class _EmbedderCache:
    """One embedder per distinct embedding config, shared by every model and session."""

    def __init__(self) -> None:
        self._embedders: dict[str, Embedder] = {}
        self._lock = threading.Lock()

    def get(self, config: dict[str, Any]) -> Embedder:
        key = json.dumps(config.get("embedding"), sort_keys=True)
        with self._lock:
            embedder = self._embedders.get(key)
            if embedder is None:
                embedder = self._embedders[key] = _create_embedder(config)
            return embedder


def _create_embedder(config: dict[str, Any]) -> Embedder:
    return create_embedder(VectorizerConfig.from_dict(config).embedding)


embedders = _EmbedderCache()


def _engine(session: Session, model: Any) -> Engine:
    bind = session.get_bind(mapper=inspect(model))
    return bind if isinstance(bind, Engine) else bind.engine


def vectorizer_info(model: Any, session: Session, *, refresh: bool = False) -> VectorizerInfo:
    """The model's catalog row, checked against its dimensions; cached per engine."""
    engine = _engine(session, model)
    info = None if refresh else _catalog.cache.get(engine, model)
    if info is None:
        binding = model.__vectorizer__
        if not session.execute(_catalog.catalog_exists_statement()).scalar():
            raise _catalog.not_installed(binding)
        row = session.execute(_catalog.lookup_statement(binding)).first()
        info = _catalog.info_from_row(binding, row)
        _catalog.cache.put(engine, model, info)
    return info


async def vectorizer_info_async(
    model: Any, session: AsyncSession, *, refresh: bool = False
) -> VectorizerInfo:
    """Async twin of :func:`vectorizer_info`; shares its cache (keyed by the sync engine)."""
    engine = _engine(session.sync_session, model)
    info = None if refresh else _catalog.cache.get(engine, model)
    if info is None:
        binding = model.__vectorizer__
        if not (await session.execute(_catalog.catalog_exists_statement())).scalar():
            raise _catalog.not_installed(binding)
        row = (await session.execute(_catalog.lookup_statement(binding))).first()
        info = _catalog.info_from_row(binding, row)
        _catalog.cache.put(engine, model, info)
    return info


def _checked_vector(model: Any, vector: Sequence[float]) -> list[float]:
    binding = model.__vectorizer__
    values = [float(x) for x in vector]
    if len(values) != binding.dimensions:
        raise VectorizerDimensionsError(
            f"{binding.describe()}: query vector has {len(values)} dimensions, "
            f"the model {binding.dimensions}"
        )
    return values


def _results(result: Result[Any]) -> list[SearchResult]:
    # unique(): SQLAlchemy demands it when the parent eagerly joins its chunks (lazy="joined");
    # every hit is a distinct store row, so it never merges two hits.
    rows: Sequence[Any] = result.unique().all()
    return [SearchResult(row[0], row[1], float(row[2])) for row in rows]


def embed_query(model: Any, session: Session, text: str) -> list[float]:
    """``text`` embedded by the vectorizer's own embedder, checked against the model's size."""
    if hasattr(session, "sync_session"):
        raise TypeError("embed_query() takes a sync Session; use embed_query_async()")
    info = vectorizer_info(model, session)
    return _checked_vector(model, embedders.get(info.config).embed_sync([text])[0])


async def embed_query_async(model: Any, session: AsyncSession, text: str) -> list[float]:
    """Async twin of :func:`embed_query`."""
    info = await vectorizer_info_async(model, session)
    return _checked_vector(model, (await embedders.get(info.config).embed([text]))[0])


def search(
    model: Any,
    session: Session,
    query: str | Sequence[float],
    *,
    limit: int = 5,
    filter: ColumnElement[bool] | Sequence[ColumnElement[bool]] | None = None,  # noqa: A002
    distance: Distance = "cosine",
) -> list[SearchResult]:
    """See :meth:`EmbeddingModel.search`."""
    if hasattr(session, "sync_session"):
        raise TypeError("search() takes a sync Session; use search_async() with an AsyncSession")
    info = vectorizer_info(model, session)
    if isinstance(query, str):
        query = embedders.get(info.config).embed_sync([query])[0]
    stmt = search_statement(model, _checked_vector(model, query), limit=limit, filter=filter,
                            distance=distance)
    return _results(session.execute(stmt))


async def search_async(
    model: Any,
    session: AsyncSession,
    query: str | Sequence[float],
    *,
    limit: int = 5,
    filter: ColumnElement[bool] | Sequence[ColumnElement[bool]] | None = None,  # noqa: A002
    distance: Distance = "cosine",
) -> list[SearchResult]:
    """See :meth:`EmbeddingModel.search_async`."""
    info = await vectorizer_info_async(model, session)
    if isinstance(query, str):
        query = (await embedders.get(info.config).embed([query]))[0]
    stmt = search_statement(model, _checked_vector(model, query), limit=limit, filter=filter,
                            distance=distance)
    return _results(await session.execute(stmt))
