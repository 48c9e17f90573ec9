"""The column destination in the ORM: the embedding is a column of the model itself.

With ``DestinationColumnConfig`` there is no store table and so no embedding class to relate
to: ``vectorizer_column(dimensions)`` is the model's own ``vector`` column, which the pipeline
fills (NULL until the row is embedded), and ``search_column(Model.attr, session, "text")``
ranks the model's rows by distance to the text embedded with the vectorizer's own model::

    class Product(Base):
        __tablename__ = "products"
        id: Mapped[int] = mapped_column(primary_key=True)
        description: Mapped[str]
        description_embedding = vectorizer_column(768)

    hits = search_column(Product.description_embedding, session, "waterproof boots", limit=5)
    hits[0].parent, hits[0].distance, hits[0].score

The vectorizer is found in the catalog by the column's table and name; the column's
dimensions are checked against it. One SELECT (``ORDER BY embedding <=> :q LIMIT n``, the form
an HNSW index on the column serves), the caller's filters in its WHERE clause.
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pgvector.sqlalchemy import Vector
from sqlalchemy import Select, and_, column, func, inspect, select, table
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import mapped_column

from pgai_orm.catalog import CATALOG_SCHEMA
from pgai_orm.sqlalchemy import _catalog, _settings
from pgai_orm.sqlalchemy._catalog import VectorizerInfo
from pgai_orm.sqlalchemy._statements import similarity
from pgai_orm.sqlalchemy.errors import VectorizerDimensionsError, VectorizerNotFoundError
from pgai_orm.sqlalchemy.search import embedders
from pgai_orm.sqlalchemy.search_options import Distance, IterativeScan, SearchOptions

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncSession
    from sqlalchemy.orm import Session

__all__ = ["ColumnSearchResult", "column_search_statement", "search_column",
           "search_column_async", "vectorizer_column"]

#: ``Column.info`` key that marks a vectorizer's embedding column (for readers of the model)
COLUMN_INFO_KEY = "pgai_embedding_column"


def vectorizer_column(dimensions: int, **column_kwargs: Any) -> Any:
    """The model's embedding column for ``destination=DestinationColumnConfig(<its name>)``.

    ``mapped_column(Vector(dimensions), nullable=True)``: the pipeline writes it (NULL until the
    row is embedded); ``dimensions`` must equal the vectorizer's. Declaring it lets Alembic's
    autogenerate see the column ``op.create_vectorizer`` adds (it accepts one that exists).
    """
    if not isinstance(dimensions, int) or isinstance(dimensions, bool) or dimensions <= 0:
        raise ValueError(f"dimensions: must be a positive integer, got {dimensions!r}")
    info = {**column_kwargs.pop("info", {}), COLUMN_INFO_KEY: True}
    return mapped_column(Vector(dimensions), nullable=True, info=info, **column_kwargs)


@dataclass(frozen=True, slots=True)
class ColumnSearchResult:
    """One ranked row: the model instance, its vector ``distance`` and a ``score`` that is
    higher for better hits (the similarity). ``key`` is the row's primary key by attribute
    name, also readable as ``hit.<name>``."""

    parent: Any
    distance: float
    score: float
    key: Mapping[str, Any]

    def __getattr__(self, name: str) -> Any:
        key = object.__getattribute__(self, "key") if not name.startswith("__") else {}
        if name in key:
            return key[name]
        raise AttributeError(f"{type(self).__name__} has no attribute {name!r} (key columns: "
                             f"{', '.join(key) or 'none'}; the row is hit.parent)")


_vectorizers = table("vectorizers", column("name"), column("source_schema"),
                     column("source_table"), column("config", JSONB), schema=CATALOG_SCHEMA)


@dataclass(frozen=True)
class _Target:
    """The attribute taken apart: its class, column, table and the dimensions it declares."""

    owner: type
    attribute: str
    column_name: str
    table_name: str
    schema: str | None
    dimensions: int | None

    def describe(self) -> str:
        return f"{self.owner.__name__}.{self.attribute}"


def _target(attribute: Any) -> _Target:
    prop = getattr(attribute, "property", None)
    columns = getattr(prop, "columns", None)
    if not columns:
        raise TypeError(f"search_column() takes a mapped column attribute such as "
                        f"Product.description_embedding, got {attribute!r}")
    col = columns[0]
    return _Target(attribute.class_, attribute.key, col.name, col.table.name, col.table.schema,
                   getattr(col.type, "dim", None))


def _lookup(target: _Target) -> Select[Any]:
    v = _vectorizers.c
    stmt = select(v.name, v.source_schema, v.source_table, v.config).where(
        v.source_table == target.table_name,
        v.config["destination"]["embedding_column"].astext == target.column_name)
    if target.schema is not None:
        return stmt.where(v.source_schema == target.schema).limit(1)
    in_path = v.source_schema == func.any_(func.current_schemas(False))
    return stmt.order_by(in_path.desc()).limit(1)


def _info(target: _Target, row: Any | None) -> VectorizerInfo:
    if row is None:
        raise VectorizerNotFoundError(
            f"{target.describe()}: no vectorizer writes column {target.column_name!r} of "
            f"{target.table_name!r}; create it with op.create_vectorizer(..., destination="
            f"DestinationColumnConfig({target.column_name!r}), chunking=ChunkingNoneConfig())")
    info = VectorizerInfo(name=row[0], target_schema=row[1], target_table=row[2], config=row[3])
    if target.dimensions is not None and info.dimensions != target.dimensions:
        raise VectorizerDimensionsError(
            f"{target.describe()}: the column is vector({target.dimensions}) but vectorizer "
            f"{info.name!r} embeds with dimensions={info.dimensions}")
    return info


class _Cache:
    """``engine -> (model, attribute) -> VectorizerInfo``; engines held weakly."""

    def __init__(self) -> None:
        self._data: weakref.WeakKeyDictionary[Any, dict[tuple[type, str], VectorizerInfo]] = (
            weakref.WeakKeyDictionary())
        self._lock = threading.Lock()

    def get(self, engine: Any, target: _Target) -> VectorizerInfo | None:
        with self._lock:
            return self._data.get(engine, {}).get((target.owner, target.attribute))

    def put(self, engine: Any, target: _Target, info: VectorizerInfo) -> None:
        with self._lock:
            self._data.setdefault(engine, {})[(target.owner, target.attribute)] = info


_cache = _Cache()


def _engine(session: Session, target: _Target) -> Any:
    bind = session.get_bind(mapper=inspect(target.owner))
    return getattr(bind, "engine", bind)


def _key(owner: type) -> list[str]:
    mapper: Any = inspect(owner)
    return [mapper.get_property_by_column(c).key for c in mapper.primary_key]


def column_search_statement(attribute: Any, vector: Sequence[float],
                            **options: Any) -> Select[Any]:
    """The SELECT :func:`search_column` runs: rows ``(instance, distance, score)``."""
    opts = _options(options)
    target = _target(attribute)
    values = [float(x) for x in vector]
    if target.dimensions is not None and len(values) != target.dimensions:
        raise VectorizerDimensionsError(f"{target.describe()}: query vector has {len(values)} "
                                        f"dimensions, the column {target.dimensions}")
    distance = getattr(attribute, opts.method)(values)
    score = similarity(opts.method, distance)
    criteria = [attribute.isnot(None)]
    if opts.filter is not None:
        criteria.extend([opts.filter] if not isinstance(opts.filter, Sequence) else opts.filter)
    if opts.max_distance is not None:
        criteria.append(distance <= opts.max_distance)
    if opts.min_score is not None:
        criteria.append(score >= opts.min_score)
    return (select(target.owner, distance.label("distance"), score.label("score"))
            .where(and_(*criteria)).order_by(distance).offset(opts.offset).limit(opts.limit))


def _options(options: Mapping[str, Any]) -> SearchOptions:
    unknown = set(options) - {"limit", "offset", "filter", "distance", "max_distance",
                              "min_score", "ef_search", "iterative_scan"}
    if unknown:
        raise TypeError(f"search_column() got unexpected options {sorted(unknown)} (a column "
                        "destination has one vector per row: no modes, no grouping)")
    return SearchOptions(**options)


def _hits(target: _Target, rows: Sequence[Any]) -> list[ColumnSearchResult]:
    names = _key(target.owner)
    return [ColumnSearchResult(r[0], float(r[1]), float(r[2]),
                               {n: getattr(r[0], n) for n in names}) for r in rows]


def search_column(attribute: Any, session: Session, query: str | Sequence[float], *,
                  limit: int = 5, offset: int = 0, filter: Any = None,  # noqa: A002
                  distance: Distance | None = None, max_distance: float | None = None,
                  min_score: float | None = None, ef_search: int | None = None,
                  iterative_scan: IterativeScan | None = None) -> list[ColumnSearchResult]:
    """Rows of ``attribute``'s model nearest to ``query`` (text, embedded with the
    vectorizer's model, or a vector). ``filter`` is a SQLAlchemy criterion (or a list) on the
    model; ``distance`` defaults to the HNSW index's, else cosine. Rows not embedded yet (NULL)
    are never hits."""
    if hasattr(session, "sync_session"):
        raise TypeError("search_column() takes a sync Session; use search_column_async()")
    target = _target(attribute)
    engine = _engine(session, target)
    info = _cache.get(engine, target)
    if info is None:
        if not session.execute(_catalog.catalog_exists_statement()).scalar():
            raise VectorizerNotFoundError(f"{target.describe()}: the database has no "
                                          f"{CATALOG_SCHEMA}.vectorizers catalog")
        info = _info(target, session.execute(_lookup(target)).first())
        _cache.put(engine, target, info)
    opts = _resolve(info, limit=limit, offset=offset, filter=filter, distance=distance,
                    max_distance=max_distance, min_score=min_score, ef_search=ef_search,
                    iterative_scan=iterative_scan)
    vector = embedders.get(info.config).embed_sync([query])[0] if isinstance(query, str) else query
    stmt = column_search_statement(attribute, vector, **_as_kwargs(opts))
    settings = _settings.hnsw_settings(opts, info)
    if settings:
        stmt = stmt.execution_options(autoflush=False)
    rows = _settings.run_with_settings(session, settings, lambda: session.execute(stmt).all())
    return _hits(target, rows)


async def search_column_async(attribute: Any, session: AsyncSession,
                              query: str | Sequence[float], **options: Any
                              ) -> list[ColumnSearchResult]:
    """Async twin of :func:`search_column` (same keyword options)."""
    target = _target(attribute)
    engine = _engine(session.sync_session, target)
    info = _cache.get(engine, target)
    if info is None:
        if not (await session.execute(_catalog.catalog_exists_statement())).scalar():
            raise VectorizerNotFoundError(f"{target.describe()}: the database has no "
                                          f"{CATALOG_SCHEMA}.vectorizers catalog")
        info = _info(target, (await session.execute(_lookup(target))).first())
        _cache.put(engine, target, info)
    opts = _resolve(info, **options)
    vector = ((await embedders.get(info.config).embed([query]))[0] if isinstance(query, str)
              else query)
    stmt = column_search_statement(attribute, vector, **_as_kwargs(opts))
    settings = _settings.hnsw_settings(opts, info)
    if settings:
        stmt = stmt.execution_options(autoflush=False)

    async def run() -> Sequence[Any]:
        return (await session.execute(stmt)).all()

    return _hits(target, await _settings.run_with_settings_async(session, settings, run))


def _resolve(info: VectorizerInfo, **options: Any) -> SearchOptions:
    opts = _options(options)
    if opts.distance is None:
        opts = SearchOptions(**{**_as_kwargs(opts), "distance": info.hnsw_distance or "cosine"})
    return opts


def _as_kwargs(opts: SearchOptions) -> dict[str, Any]:
    return {"limit": opts.limit, "offset": opts.offset, "filter": opts.filter,
            "distance": opts.distance, "max_distance": opts.max_distance,
            "min_score": opts.min_score, "ef_search": opts.ef_search,
            "iterative_scan": opts.iterative_scan}
