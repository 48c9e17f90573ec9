"""Search over an embedding model: vector, keyword or hybrid, per chunk or per parent row.

pgai computes the query vector in SQL (``ai.openai_embed(...)``); here the vectorizer's own
embedder computes it in Python, built from the config in the catalog, so query and stored
vectors share model, dimensions and provider settings. Embedders are cached per embedding config
(loading a model or an HTTP client per query would dominate the search time). Keyword mode
never embeds.

One SELECT does the rest (:mod:`pgai_orm.sqlalchemy._statements`): rankings, fusion, grouping,
the caller's filters, chunk and parent together, so Postgres plans index scans and filters
as one. HNSW settings it needs are set for that statement only (:mod:`._settings`).
docs/search.md says what each mode costs and when to use it.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from sqlalchemy import Select, inspect
from sqlalchemy.engine import Engine

from pgai_orm.configuration import VectorizerConfig
from pgai_orm.embedders import Embedder, create_embedder
from pgai_orm.sqlalchemy import _catalog, _settings
from pgai_orm.sqlalchemy._catalog import VectorizerInfo
from pgai_orm.sqlalchemy._statements import SearchQuery, build_statement
from pgai_orm.sqlalchemy.errors import VectorizerDimensionsError, VectorizerTextIndexError
from pgai_orm.sqlalchemy.results import SearchResult, hits_from_rows, parent_key_attributes
from pgai_orm.sqlalchemy.search_options import DISTANCES, Distance, SearchOptions

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncSession
    from sqlalchemy.orm import Session


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

__all__ = ["DISTANCES", "Distance", "SearchOptions", "SearchResult", "embed_query",
           "embed_query_async", "embedders", "search", "search_async", "search_statement",
           "vectorizer_info", "vectorizer_info_async"]


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


def search_statement(
    model: Any,
    vector: Sequence[float] | None,
    *,
    keywords: str | None = None,
    text_config: str = "english",
    **options: Any,
) -> Select[Any]:
    """The SELECT :func:`search` would run, for ``EXPLAIN`` or your own execution.

    ``vector`` is the query vector (vector and hybrid modes), ``keywords`` the query text
    (keyword and hybrid modes), ``text_config`` the keyword index's configuration; ``options``
    are :func:`search`'s keyword arguments. Rows are ``(embedding row, parent, distance,
    score)``. Without the catalog nothing is resolved: ``distance`` defaults to cosine.
    """
    opts = SearchOptions(**options)
    checked = None if vector is None else _checked_vector(model, vector)
    return build_statement(model, SearchQuery(checked, keywords, text_config), opts)


def _resolve(info: VectorizerInfo, query: str | Sequence[float],
             options: SearchOptions) -> SearchOptions:
    """Defaults from the catalog (the HNSW index's distance) and the keyword side's checks."""
    if options.distance is None:
        options = replace(options, distance=info.hnsw_distance or "cosine_distance")
    if options.needs_keywords and not isinstance(query, str):
        raise ValueError(f"mode={options.mode!r} needs the query text for its keyword ranking, "
                         "not a vector")
    return options


def _no_text_index(model: Any, info: VectorizerInfo, mode: str) -> VectorizerTextIndexError:
    return VectorizerTextIndexError(
        f"{model.__vectorizer__.describe()}: mode={mode!r} needs a keyword index, and vectorizer "
        f"{info.name!r} has none; add one in a migration with op.alter_vectorizer({info.name!r}, "
        "text_indexing=TextIndexingFullTextConfig()) (in place, nothing is re-embedded)")


def _statement(model: Any, info: VectorizerInfo, query: str | Sequence[float],
               vector: list[float] | None, options: SearchOptions,
               settings: dict[str, str]) -> Select[Any]:
    keywords = query if isinstance(query, str) and options.needs_keywords else None
    stmt = build_statement(model, SearchQuery(vector, keywords, info.text_config), options)
    # inside the settings' savepoint nothing may be flushed: its rollback would undo it
    return stmt.execution_options(autoflush=False) if settings else stmt


def search(model: Any, session: Session, query: str | Sequence[float],
           **options: Any) -> list[SearchResult]:
    """See :meth:`EmbeddingModel.search`; ``options`` are its keyword arguments."""
    if hasattr(session, "sync_session"):
        raise TypeError("search() takes a sync Session; use search_async() with an AsyncSession")
    opts = SearchOptions(**options)
    info = vectorizer_info(model, session)
    if opts.needs_keywords and info.text_config is None:
        info = vectorizer_info(model, session, refresh=True)  # a migration may have added it
        if info.text_config is None:
            raise _no_text_index(model, info, opts.mode)
    opts = _resolve(info, query, opts)
    vector = None
    if opts.needs_vector:
        raw = embedders.get(info.config).embed_sync([query])[0] if isinstance(query, str) else query
        vector = _checked_vector(model, raw)
    settings = _settings.hnsw_settings(opts, info)
    stmt = _statement(model, info, query, vector, opts, settings)
    rows = _settings.run_with_settings(session, settings,
                                       lambda: session.execute(stmt).unique().all())
    return hits_from_rows(rows, parent_key_attributes(model), grouped=opts.group_by_parent)


async def search_async(model: Any, session: AsyncSession, query: str | Sequence[float],
                       **options: Any) -> list[SearchResult]:
    """See :meth:`EmbeddingModel.search_async`."""
    opts = SearchOptions(**options)
    info = await vectorizer_info_async(model, session)
    if opts.needs_keywords and info.text_config is None:
        info = await vectorizer_info_async(model, session, refresh=True)
        if info.text_config is None:
            raise _no_text_index(model, info, opts.mode)
    opts = _resolve(info, query, opts)
    vector = None
    if opts.needs_vector:
        raw = ((await embedders.get(info.config).embed([query]))[0] if isinstance(query, str)
               else query)
        vector = _checked_vector(model, raw)
    settings = _settings.hnsw_settings(opts, info)
    stmt = _statement(model, info, query, vector, opts, settings)

    async def run() -> Sequence[Any]:
        return (await session.execute(stmt)).unique().all()

    rows = await _settings.run_with_settings_async(session, settings, run)
    return hits_from_rows(rows, parent_key_attributes(model), grouped=opts.group_by_parent)
