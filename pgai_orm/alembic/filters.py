"""Autogenerate filters: keep ``alembic revision --autogenerate`` away from what the vectorizers own.

Without a filter, autogenerate proposes ``op.drop_table`` for every table in the database that
the application's MetaData does not describe: the catalog (schema ``vectorizer``, reflected
with ``include_schemas=True``), the embedding stores, and the stores of building or retired
config versions (``<store>_v2``, ...), which no model knows. A model mapped over a vectorizer's
view would get an ``op.create_table`` (autogenerate does not see views). :func:`include_object`
(Alembic's ``include_object`` hook) says no to all of them:

* anything in :data:`pgai_orm.catalog.schema.CATALOG_SCHEMA`;
* every table in ``metadata.info["pgai_managed_tables"]`` (:data:`pgai_orm.names.MANAGED_TABLES_KEY`:
  what ``vectorizer_relationship`` and ``declare_vectorizer`` record) and every table marked
  ``info["pgai_managed"]``;
* every store (of every config version) and view the catalog lists, and the views of the
  vectorizers declared with ``declare_vectorizer``.

:func:`include_name` (Alembic's ``include_name`` hook, which runs before anything is reflected)
keeps Alembic from reading the catalog schema and the stores and views at all: reflecting the
catalog would also warn about its ``pg_lsn`` columns, a type SQLAlchemy does not know.

The catalog is read once per autogenerate run, on the run's own connection, by a comparator
that Alembic calls before it compares tables (registered when this module is imported, which
importing :mod:`pgai_orm.alembic` does). :func:`make_include_object` and
:func:`make_include_name` combine the filters with an application's own.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

from alembic.autogenerate import comparators
from alembic.autogenerate.api import AutogenContext
from alembic.operations.ops import UpgradeOps
from alembic.util import DispatchPriority, PriorityDispatchResult
from sqlalchemy import MetaData, Table, text

from pgai_orm.alembic.autogenerate import DECLARATIONS_KEY
from pgai_orm.catalog.schema import CATALOG_SCHEMA
from pgai_orm.names import MANAGED_TABLES_KEY

__all__ = [
    "IncludeName",
    "IncludeObject",
    "include_name",
    "include_object",
    "make_include_name",
    "make_include_object",
]

#: Alembic's ``include_object(object, name, type_, reflected, compare_to) -> bool``.
IncludeObject = Callable[[Any, "str | None", str, bool, Any], bool]
#: Alembic's ``include_name(name, type_, parent_names) -> bool``.
IncludeName = Callable[["str | None", str, "Mapping[str, str | None]"], bool]

_CATALOG_RELATIONS_SQL = (
    "SELECT target_schema, target_table FROM vectorizer.config_versions WHERE target_table IS NOT NULL"
    " UNION SELECT target_schema, target_table FROM vectorizer.vectorizers WHERE target_table IS NOT NULL"
    " UNION SELECT view_schema, view_table FROM vectorizer.vectorizers WHERE view_table IS NOT NULL"
)


@dataclass(frozen=True, slots=True)
class _Owned:
    """What the vectorizers own, as seen at the start of one autogenerate run."""

    default_schema: str | None
    #: ``schema.table`` of every store and view in the catalog, and of declared views
    relations: frozenset[str]
    #: ``metadata.info["pgai_managed_tables"]`` of every target MetaData, as recorded
    managed: frozenset[str]


_owned: ContextVar[_Owned | None] = ContextVar("pgai_orm_autogenerate_owned", default=None)


def _metadatas(autogen_context: AutogenContext) -> list[MetaData]:
    metadata: Any = autogen_context.metadata
    found: Iterable[Any] = metadata if isinstance(metadata, list | tuple) else [metadata]
    return [md for md in found if isinstance(md, MetaData)]


def _declared_views(metadatas: Iterable[MetaData]) -> set[str]:
    views = set()
    for md in metadatas:
        for op in md.info.get(DECLARATIONS_KEY, {}).values():
            if op.config.destination is not None:
                continue  # a column destination has no view
            schema = op.view_schema or op.target_schema or op.source_schema
            table = op.view_table or f"{op.source}_embedding"
            views.add(f"{schema}.{table}" if schema else table)
    return views


@comparators.dispatch_for("schema", priority=DispatchPriority.FIRST)
def read_owned_relations(autogen_context: AutogenContext, upgrade_ops: UpgradeOps,
                         schemas: set[str | None]) -> PriorityDispatchResult:
    """Before tables are compared: read the stores and views of the catalog for the filter."""
    connection = autogen_context.connection
    relations: set[str] = set()
    default_schema = None
    if connection is not None:
        default_schema = connection.dialect.default_schema_name
        if connection.execute(text("SELECT to_regclass('vectorizer.vectorizers')")).scalar():
            relations = {f"{schema}.{table}"
                         for schema, table in connection.execute(text(_CATALOG_RELATIONS_SQL))}
    metadatas = _metadatas(autogen_context)
    relations |= _declared_views(metadatas)
    managed = {name for md in metadatas for name in md.info.get(MANAGED_TABLES_KEY, ())}
    _owned.set(_Owned(default_schema, frozenset(relations), frozenset(managed)))
    return PriorityDispatchResult.CONTINUE


@comparators.dispatch_for("schema", priority=DispatchPriority.LAST)
def forget_owned_relations(autogen_context: AutogenContext, upgrade_ops: UpgradeOps,
                           schemas: set[str | None]) -> PriorityDispatchResult:
    """After tables were compared: the next run reads the catalog again."""
    _owned.set(None)
    return PriorityDispatchResult.CONTINUE


def _owned_names(table_names: Iterable[str], default_schema: str) -> set[str]:
    """``schema.table`` of every relation the vectorizers own (``table`` alone: default schema)."""
    return {n if "." in n else f"{default_schema}.{n}" for n in table_names}


def _owned_now(metadata: MetaData | None) -> tuple[set[str], str]:
    owned = _owned.get()
    default_schema = (owned.default_schema if owned is not None else None) or "public"
    names = set(metadata.info.get(MANAGED_TABLES_KEY, ())) if metadata is not None else set()
    if owned is not None:
        names |= owned.managed | owned.relations
    return _owned_names(names, default_schema), default_schema


def include_name(name: str | None, type_: str, parent_names: Mapping[str, str | None]) -> bool:
    """Alembic's ``include_name`` hook: do not even reflect the catalog, the stores and views.

    Pass it with :func:`include_object`: ``context.configure(..., include_schemas=True,
    include_name=include_name, include_object=include_object)``.
    """
    if type_ == "schema":
        return name != CATALOG_SCHEMA
    schema = parent_names.get("schema_name")
    if schema == CATALOG_SCHEMA:
        return False
    if type_ != "table" or name is None:
        return True
    owned, default_schema = _owned_now(None)
    return f"{schema or default_schema}.{name}" not in owned


def include_object(object: Any, name: str | None, type_: str, reflected: bool,  # noqa: A002  # Alembic's parameter name
                   compare_to: Any) -> bool:
    """Alembic's ``include_object`` hook: False for the catalog and what the vectorizers own.

    Pass it to ``context.configure(..., include_object=include_object)``; with
    ``include_schemas=True`` too. Tables are judged by name; a column, index or constraint by
    its table, so nothing of an excluded table is compared either.
    """
    table = object if type_ == "table" else getattr(object, "table", None)
    if not isinstance(table, Table):
        return True
    if table.schema == CATALOG_SCHEMA or table.info.get("pgai_managed"):
        return False
    owned, default_schema = _owned_now(table.metadata)
    return f"{table.schema or default_schema}.{table.name}" not in owned


def make_include_object(*filters: IncludeObject | None) -> IncludeObject:
    """:func:`include_object` combined with the application's own filters (all must agree).

    ``context.configure(..., include_object=make_include_object(my_filter))``: an object is
    compared only when :func:`include_object` and every given filter return True.
    """
    chosen = [f for f in filters if f is not None]

    def combined(object: Any, name: str | None, type_: str, reflected: bool,  # noqa: A002  # Alembic's parameter name
                 compare_to: Any) -> bool:
        return include_object(object, name, type_, reflected, compare_to) and all(
            f(object, name, type_, reflected, compare_to) for f in chosen)

    return combined


def make_include_name(*filters: IncludeName | None) -> IncludeName:
    """:func:`include_name` combined with the application's own ``include_name`` filters."""
    chosen = [f for f in filters if f is not None]

    def combined(name: str | None, type_: str, parent_names: Mapping[str, str | None]) -> bool:
        return include_name(name, type_, parent_names) and all(
            f(name, type_, parent_names) for f in chosen)

    return combined
