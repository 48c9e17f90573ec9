"""Reading a model's vectorizer from the catalog, and checking its dimensions.

The lookup is written with SQLAlchemy Core (not ``pgai_orm.catalog``'s psycopg helpers) so the
same statements run on a sync ``Session`` and an ``AsyncSession``, inside the caller's own
transaction. Results are cached per engine and model: the model maps one store table, so its
vectorizer cannot change under it without a new mapping; ``refresh=True`` re-reads it.
"""

from __future__ import annotations

import threading
import weakref
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Select, column, func, literal, select, table
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.engine import Engine

from pgai_orm.catalog import CATALOG_SCHEMA
from pgai_orm.configuration import IndexingHnswConfig
from pgai_orm.sqlalchemy.binding import VectorizerBinding
from pgai_orm.sqlalchemy.errors import VectorizerDimensionsError, VectorizerNotFoundError

_vectorizers = table(
    "vectorizers",
    column("name"),
    column("target_schema"),
    column("target_table"),
    column("config", JSONB),
    schema=CATALOG_SCHEMA,
)


@dataclass(frozen=True, slots=True)
class VectorizerInfo:
    """What query time needs from a catalog row: who it is and how it embeds."""

    name: str
    target_schema: str
    target_table: str
    config: dict[str, Any]

    @property
    def dimensions(self) -> int | None:
        """``config->'embedding'->>'dimensions'``, the size of every stored vector."""
        value = self.config.get("embedding", {}).get("dimensions")
        return int(value) if value is not None else None

    @property
    def text_config(self) -> str | None:
        """The keyword index's text search configuration (``text_indexing``), None without one."""
        text_indexing = self.config.get("text_indexing") or {}
        if text_indexing.get("implementation") != "full_text":
            return None
        return str(text_indexing.get("text_config") or "english")

    @property
    def hnsw_distance(self) -> str | None:
        """The comparator the vectorizer's HNSW index serves (``cosine_distance``, ...), if any."""
        indexing = self.config.get("indexing") or {}
        if indexing.get("implementation") != "hnsw":
            return None
        return IndexingHnswConfig.from_dict(indexing).distance


def catalog_exists_statement() -> Select[Any]:
    """Probe first: selecting from a missing table would abort the caller's transaction."""
    return select(func.to_regclass(literal(f"{CATALOG_SCHEMA}.vectorizers")).isnot(None))


def lookup_statement(binding: VectorizerBinding) -> Select[Any]:
    """The catalog row whose target is the model's store table.

    Without an explicit schema the row in the session's search path wins, as Postgres itself
    would resolve the unqualified table name the model maps.
    """
    v = _vectorizers.c
    stmt = select(v.name, v.target_schema, v.target_table, v.config).where(
        v.target_table == binding.table_name
    )
    if binding.schema is not None:
        return stmt.where(v.target_schema == binding.schema).limit(1)
    in_path = v.target_schema == func.any_(func.current_schemas(False))
    return stmt.order_by(in_path.desc()).limit(1)


def info_from_row(binding: VectorizerBinding, row: Any | None) -> VectorizerInfo:
    """Turn the lookup's row into a checked :class:`VectorizerInfo` (or raise why not)."""
    if row is None:
        raise VectorizerNotFoundError(
            f"{binding.describe()}: no vectorizer in {CATALOG_SCHEMA}.vectorizers has target "
            f"table {binding.table_fullname!r}; create it with op.create_vectorizer(...)"
        )
    info = VectorizerInfo(name=row[0], target_schema=row[1], target_table=row[2], config=row[3])
    if info.dimensions != binding.dimensions:
        raise VectorizerDimensionsError(
            f"{binding.describe()}: vectorizer_relationship(dimensions={binding.dimensions}) but "
            f"vectorizer {info.name!r} ({info.target_schema}.{info.target_table}) embeds with "
            f"dimensions={info.dimensions}; make the model match the vectorizer's embedding config"
        )
    return info


def not_installed(binding: VectorizerBinding) -> VectorizerNotFoundError:
    """The error for a database that has no catalog at all."""
    return VectorizerNotFoundError(
        f"{binding.describe()}: the database has no {CATALOG_SCHEMA}.vectorizers catalog; run the "
        "migration that calls op.create_vectorizer(...)"
    )


class _PerEngineCache:
    """``engine -> model -> VectorizerInfo``; engines are held weakly so disposal frees them."""

    def __init__(self) -> None:
        self._data: weakref.WeakKeyDictionary[Engine, dict[type, VectorizerInfo]] = (
            weakref.WeakKeyDictionary()
        )
        self._lock = threading.Lock()

    def get(self, engine: Engine, model: type) -> VectorizerInfo | None:
        with self._lock:
            return self._data.get(engine, {}).get(model)

    def put(self, engine: Engine, model: type, info: VectorizerInfo) -> None:
        with self._lock:
            self._data.setdefault(engine, {})[model] = info


cache = _PerEngineCache()
