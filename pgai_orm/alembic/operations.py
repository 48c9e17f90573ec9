"""Alembic operations: ``op.create_vectorizer``, ``op.alter_vectorizer``, ``op.drop_vectorizer``,
``op.disable_vectorizer`` and ``op.enable_vectorizer`` (pause and resume).

Each operation is one small ``MigrateOperation`` whose SQL is produced in one place
(``statements()``) and used by online execution, offline ``--sql`` rendering and autogenerate
alike. The SQL is a call of a catalog function (``sql/catalog.sql``) with bound literals; user text
never becomes part of the SQL string. The catalog itself is installed (or upgraded) before the
first operation that finds it missing or older, once (:func:`_install_catalog_if_needed`). Config objects validate themselves on construction, the
catalog function validates them against the live source table.
"""

from __future__ import annotations

import weakref
from collections.abc import Sequence
from typing import Any

import orjson
import sqlalchemy as sa
from alembic.operations import MigrateOperation, Operations
from alembic.runtime.migration import MigrationContext
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.sql.elements import TextClause

from pgai_orm.catalog.schema import CATALOG_VERSION, install_statements, read_installed_version
from pgai_orm.configuration import (
    ChunkingConfig,
    DestinationColumnConfig,
    DestinationConfig,
    DestinationTableConfig,
    EmbeddingConfig,
    FormattingConfig,
    IndexingConfig,
    LoadingConfig,
    ParsingConfig,
    ProcessingConfig,
    TextIndexingConfig,
    VectorizerConfig,
)
from pgai_orm.errors import VectorizerError
from pgai_orm.names import SLOT_PREFIX


class VectorizerOperationError(VectorizerError, ValueError):
    """A vectorizer operation was called with arguments that cannot work, named in the message."""


def catalog_install_statements() -> list[TextClause]:
    """The versioned catalog install (:mod:`pgai_orm.catalog.schema`) as Alembic statements."""
    # Colons in the SQL (casts, PL/pgSQL assignments) must not be read as bind parameters.
    return [sa.text(s.replace(":", r"\:")) for s in install_statements()]


def _split_qualified(name: str, what: str) -> tuple[str | None, str]:
    """``"schema.table"`` -> (schema, table); a name holding dots must use the ``*_schema`` argument."""
    if not isinstance(name, str) or not name:
        raise VectorizerOperationError(f"{what} must be a non-empty string, got {name!r}")
    if "\x00" in name:
        raise VectorizerOperationError(f"{what} must not contain NUL bytes: {name!r}")
    if name.count(".") == 1:
        schema, table = name.split(".")
        if schema and table:
            return schema, table
    return None, name


def _check_optional_name(value: str | None, what: str) -> None:
    if value is None:
        return
    if not isinstance(value, str) or not value:
        raise VectorizerOperationError(f"{what} must be a non-empty string, got {value!r}")
    if "\x00" in value:
        raise VectorizerOperationError(f"{what} must not contain NUL bytes: {value!r}")
    if len(value.encode("utf-8")) > 63:
        raise VectorizerOperationError(
            f"{what} {value!r} is longer than 63 bytes; Postgres would truncate it"
        )


def _config_args(config: VectorizerConfig) -> dict[str, Any]:
    placeholders = sorted(config.formatting.placeholders) if hasattr(
        config.formatting, "placeholders") else []
    return {
        "config": orjson.dumps(config.to_dict()).decode(),
        "source_column": config.source_column,
        "placeholders": placeholders,
        "dimensions": config.embedding.dimensions,
    }


_TEXT_ARRAY = ARRAY(sa.Text())


def _destination_names(
    destination: Any, target_schema: str | None, target_table: str | None,
    view_schema: str | None, view_table: str | None,
) -> tuple[str | None, str | None, str | None, str | None, DestinationColumnConfig | None]:
    """pgai's ``destination=`` folded into the seed's keywords (which keep working).

    A ``DestinationTableConfig`` gives the store and view names (pgai's ``destination`` base
    name: view ``<destination>``, store ``<destination>_store``); naming one of them twice,
    differently, is an error. A ``DestinationColumnConfig`` has neither store nor view.
    """
    names = {"target_schema": target_schema, "target_table": target_table,
             "view_schema": view_schema, "view_table": view_table}
    if destination is None:
        return target_schema, target_table, view_schema, view_table, None
    if isinstance(destination, DestinationColumnConfig):
        given = [k for k, v in names.items() if v is not None]
        if given:
            raise VectorizerOperationError(
                f"destination=DestinationColumnConfig(...) has no store table or view, so "
                f"{', '.join(given)} cannot be given with it")
        return None, None, None, None, destination
    if not isinstance(destination, DestinationTableConfig):
        raise VectorizerOperationError(
            "destination must be DestinationTableConfig(...) or DestinationColumnConfig(...), "
            f"got {destination!r}")
    from_config = {"target_schema": destination.target_schema,
                   "target_table": destination.resolved_target_table,
                   "view_schema": destination.view_schema,
                   "view_table": destination.resolved_view_name}
    for key, value in from_config.items():
        if value is None:
            continue
        if names[key] is not None and names[key] != value:
            raise VectorizerOperationError(
                f"{key}={names[key]!r} contradicts destination={destination!r} "
                f"(which gives {value!r}); pass one of them")
        names[key] = value
    return (names["target_schema"], names["target_table"], names["view_schema"],
            names["view_table"], None)


@Operations.register_operation("create_vectorizer")
class CreateVectorizerOp(MigrateOperation):
    """Declare a vectorizer on a source table: catalog row, store table, view, index, publication."""

    def __init__(
        self,
        source: str,
        name: str | None = None,
        target_schema: str | None = None,
        target_table: str | None = None,
        view_schema: str | None = None,
        view_table: str | None = None,
        embedding: EmbeddingConfig | None = None,
        chunking: ChunkingConfig | None = None,
        formatting: FormattingConfig | None = None,
        indexing: IndexingConfig | None = None,
        processing: ProcessingConfig | None = None,
        loading: LoadingConfig | None = None,
        parsing: ParsingConfig | None = None,
        if_not_exists: bool = False,
        grant_to: Sequence[str] | None = None,
        source_schema: str | None = None,
        text_indexing: TextIndexingConfig | None = None,
        destination: DestinationConfig | None = None,
    ) -> None:
        if source_schema is None:
            source_schema, source = _split_qualified(source, "source")
        target_schema, target_table, view_schema, view_table, column = _destination_names(
            destination, target_schema, target_table, view_schema, view_table)
        for value, what in ((source, "source"), (source_schema, "source_schema"), (name, "name"),
                            (target_schema, "target_schema"), (target_table, "target_table"),
                            (view_schema, "view_schema"), (view_table, "view_table")):
            _check_optional_name(value, what)
        grants = list(grant_to or [])
        for role in grants:
            _check_optional_name(role, "grant_to role")
        self.source = source
        self.source_schema = source_schema
        self.name = name
        self.target_schema = target_schema
        self.target_table = target_table
        self.view_schema = view_schema
        self.view_table = view_table
        self.if_not_exists = if_not_exists
        self.grant_to = grants
        kwargs: dict[str, Any] = {k: v for k, v in (("embedding", embedding), ("chunking", chunking),
                                    ("formatting", formatting), ("indexing", indexing),
                                    ("processing", processing), ("loading", loading),
                                    ("parsing", parsing), ("text_indexing", text_indexing))
                  if v is not None}
        if column is not None:
            kwargs["destination"] = column
        self.config = VectorizerConfig(**kwargs)

    @classmethod
    def create_vectorizer(
        cls,
        operations: Operations,
        source: str,
        name: str | None = None,
        target_schema: str | None = None,
        target_table: str | None = None,
        view_schema: str | None = None,
        view_table: str | None = None,
        embedding: EmbeddingConfig | None = None,
        chunking: ChunkingConfig | None = None,
        formatting: FormattingConfig | None = None,
        indexing: IndexingConfig | None = None,
        processing: ProcessingConfig | None = None,
        loading: LoadingConfig | None = None,
        parsing: ParsingConfig | None = None,
        if_not_exists: bool = False,
        grant_to: Sequence[str] | None = None,
        source_schema: str | None = None,
        text_indexing: TextIndexingConfig | None = None,
        destination: DestinationConfig | None = None,
    ) -> Any:
        """Create a vectorizer: from now on every change of ``source`` is embedded into its store.

        ``source`` is a table name or ``"schema.table"`` (pass ``source_schema`` for names that
        contain a dot). Defaults follow pgai: store ``<source>_embedding_store``, view
        ``<source>_embedding``, both in the source's schema; the name defaults to
        ``<view_schema>_<view_table>``. ``text_indexing=TextIndexingFullTextConfig()`` adds the
        keyword index that ``search(mode="keyword" | "hybrid")`` needs (docs/search.md).
        ``destination`` is pgai's: ``DestinationTableConfig(...)`` names the store and view (the
        same as ``target_table=``/``view_table=``), ``DestinationColumnConfig(embedding_column)``
        with ``ChunkingNoneConfig`` writes one embedding per row into a column of the source
        (docs/destinations.md).
        """
        return operations.invoke(cls(
            source, name=name, target_schema=target_schema, target_table=target_table,
            view_schema=view_schema, view_table=view_table, embedding=embedding,
            chunking=chunking, formatting=formatting, indexing=indexing, processing=processing,
            loading=loading, parsing=parsing, if_not_exists=if_not_exists, grant_to=grant_to,
            source_schema=source_schema, text_indexing=text_indexing, destination=destination))

    def statements(self) -> list[TextClause]:
        """The SQL of this operation, for online and offline migrations."""
        args = _config_args(self.config)
        call = sa.text(
            "SELECT vectorizer.create_vectorizer(:source_schema, :source_table, :name, "
            ":target_schema, :target_table, :view_schema, :view_table, CAST(:config AS jsonb), "
            ":source_column, CAST(:placeholders AS text[]), :dimensions, :if_not_exists, "
            "CAST(:grant_to AS text[]))"
        ).bindparams(
            sa.bindparam("source_schema", self.source_schema, type_=sa.Text()),
            sa.bindparam("source_table", self.source, type_=sa.Text()),
            sa.bindparam("name", self.name, type_=sa.Text()),
            sa.bindparam("target_schema", self.target_schema, type_=sa.Text()),
            sa.bindparam("target_table", self.target_table, type_=sa.Text()),
            sa.bindparam("view_schema", self.view_schema, type_=sa.Text()),
            sa.bindparam("view_table", self.view_table, type_=sa.Text()),
            sa.bindparam("config", args["config"], type_=sa.Text()),
            sa.bindparam("source_column", args["source_column"], type_=sa.Text()),
            sa.bindparam("placeholders", args["placeholders"], type_=_TEXT_ARRAY),
            sa.bindparam("dimensions", args["dimensions"], type_=sa.Integer()),
            sa.bindparam("if_not_exists", self.if_not_exists, type_=sa.Boolean()),
            sa.bindparam("grant_to", self.grant_to, type_=_TEXT_ARRAY),
        )
        return [call]

    def reverse(self) -> DropVectorizerOp:
        column = self.config.destination
        if column is not None:  # no store to find it by: pgai's default name
            name = self.name or (f"{self.source_schema or 'public'}_{self.source}_"
                                 f"{column.embedding_column}")
            return DropVectorizerOp(name=name, drop_all=True)
        return DropVectorizerOp(name=self.name, target_table=self._qualified_target(),
                                drop_all=True)

    def _qualified_target(self) -> str:
        table = self.target_table or f"{self.source}_embedding_store"
        schema = self.target_schema or self.source_schema
        return f"{schema}.{table}" if schema else table

    def __repr__(self) -> str:
        return f"CreateVectorizerOp(source={self.source!r}, name={self.name!r})"


@Operations.register_operation("drop_vectorizer")
class DropVectorizerOp(MigrateOperation):
    """Remove a vectorizer: its catalog row and publication; with ``drop_all`` its store and view."""

    def __init__(self, name: str | None = None, target_table: str | None = None,
                 drop_all: bool = False, if_exists: bool = False) -> None:
        if name is None and target_table is None:
            raise VectorizerOperationError("drop_vectorizer needs a name or a target_table")
        _check_optional_name(name, "name")
        self.name = name
        self.target_table = target_table
        self.drop_all = drop_all
        self.if_exists = if_exists
        # Set by autogenerate from the catalog, so a generated downgrade can recreate it.
        self.recreate: CreateVectorizerOp | None = None

    def reverse(self) -> CreateVectorizerOp:
        if self.recreate is None:
            raise NotImplementedError(
                "drop_vectorizer cannot be reversed without the vectorizer's original config")
        return self.recreate

    @classmethod
    def drop_vectorizer(cls, operations: Operations, name: str | None = None,
                        target_table: str | None = None, drop_all: bool = False,
                        if_exists: bool = False) -> Any:
        """Drop a vectorizer found by name or by its store table (``"table"`` or ``"schema.table"``).

        Without ``drop_all`` the store table and view are kept (pgai's behaviour). When the last
        vectorizer of the database goes, the connector's inactive replication slot goes too.
        """
        return operations.invoke(cls(name=name, target_table=target_table, drop_all=drop_all,
                                     if_exists=if_exists))

    def statements(self) -> list[TextClause]:
        call = sa.text(
            "SELECT vectorizer.drop_vectorizer(:name, :target_table, :drop_all, :if_exists,"
            " :slot_prefix)"
        ).bindparams(
            sa.bindparam("name", self.name, type_=sa.Text()),
            sa.bindparam("target_table", self.target_table, type_=sa.Text()),
            sa.bindparam("drop_all", self.drop_all, type_=sa.Boolean()),
            sa.bindparam("if_exists", self.if_exists, type_=sa.Boolean()),
            sa.bindparam("slot_prefix", SLOT_PREFIX, type_=sa.Text()),
        )
        return [call]

    def __repr__(self) -> str:
        return f"DropVectorizerOp(name={self.name!r}, target_table={self.target_table!r})"


@Operations.register_operation("alter_vectorizer")
class AlterVectorizerOp(MigrateOperation):
    """Change a vectorizer's config; a change of what is embedded makes a new config version.

    pgai has no such operation. A new model, dimensions, chunking, formatting or loading config
    creates version N+1 with a fresh store table that processors fill by replaying the topic while
    the current version keeps serving queries; processing and indexing options apply in place.
    ``text_indexing`` changes the serving (and building) stores in place, without re-embedding,
    and a new version's store gets it too.
    """

    def __init__(self, name: str, embedding: EmbeddingConfig | None = None,
                 chunking: ChunkingConfig | None = None,
                 formatting: FormattingConfig | None = None,
                 indexing: IndexingConfig | None = None,
                 processing: ProcessingConfig | None = None,
                 loading: LoadingConfig | None = None,
                 text_indexing: TextIndexingConfig | None = None,
                 parsing: ParsingConfig | None = None) -> None:
        _check_optional_name(name, "name")
        self.name = name
        self.changes = {k: v for k, v in (("embedding", embedding), ("chunking", chunking),
                                          ("formatting", formatting), ("indexing", indexing),
                                          ("processing", processing), ("loading", loading),
                                          ("text_indexing", text_indexing), ("parsing", parsing))
                        if v is not None}
        if not self.changes:
            raise VectorizerOperationError(
                "alter_vectorizer needs at least one of embedding, chunking, formatting, "
                "indexing, processing, loading, parsing, text_indexing")
        # Set by autogenerate from the catalog, so a generated downgrade restores the old config.
        self.previous: dict[str, Any] | None = None

    def reverse(self) -> AlterVectorizerOp:
        if self.previous is None:
            raise NotImplementedError(
                "alter_vectorizer cannot be reversed without the vectorizer's previous config")
        reverse = AlterVectorizerOp(self.name, **self.previous)
        reverse.previous = dict(self.changes)
        return reverse

    @classmethod
    def alter_vectorizer(cls, operations: Operations, name: str,
                         embedding: EmbeddingConfig | None = None,
                         chunking: ChunkingConfig | None = None,
                         formatting: FormattingConfig | None = None,
                         indexing: IndexingConfig | None = None,
                         processing: ProcessingConfig | None = None,
                         loading: LoadingConfig | None = None,
                         text_indexing: TextIndexingConfig | None = None,
                         parsing: ParsingConfig | None = None) -> Any:
        """Change the config of vectorizer ``name`` (see the class docstring)."""
        return operations.invoke(cls(name, embedding=embedding, chunking=chunking,
                                     formatting=formatting, indexing=indexing,
                                     processing=processing, loading=loading,
                                     text_indexing=text_indexing, parsing=parsing))

    def statements(self) -> list[TextClause]:
        patch = {k: v.to_dict() for k, v in self.changes.items()}
        chunking = self.changes.get("chunking")
        loading = self.changes.get("loading")
        source_column = (getattr(loading, "column_name", None)
                         or getattr(chunking, "chunk_column", None))
        formatting = self.changes.get("formatting")
        placeholders = sorted(getattr(formatting, "placeholders", ()) or ())
        embedding = self.changes.get("embedding")
        call = sa.text(
            "SELECT vectorizer.alter_vectorizer(:name, CAST(:patch AS jsonb), :source_column, "
            "CAST(:placeholders AS text[]), COALESCE(:dimensions, (SELECT (config->'embedding'->>'dimensions')::int "
            "FROM vectorizer.vectorizers WHERE name = :name)))"
        ).bindparams(
            sa.bindparam("name", self.name, type_=sa.Text()),
            sa.bindparam("patch", orjson.dumps(patch).decode(), type_=sa.Text()),
            sa.bindparam("source_column", source_column, type_=sa.Text()),
            sa.bindparam("placeholders", placeholders, type_=_TEXT_ARRAY),
            sa.bindparam("dimensions", getattr(embedding, "dimensions", None),
                         type_=sa.Integer()),
        )
        return [call]

    def __repr__(self) -> str:
        return f"AlterVectorizerOp(name={self.name!r}, changes={sorted(self.changes)})"


class _PauseOp(MigrateOperation):
    """Pause or resume one vectorizer by name: one call of a catalog function."""

    function = ""  # the catalog function, set by each subclass

    def __init__(self, name: str) -> None:
        if name is None:
            raise VectorizerOperationError(f"{type(self).__name__} needs the vectorizer's name")
        _check_optional_name(name, "name")
        self.name = name

    def statements(self) -> list[TextClause]:
        return [sa.text(f"SELECT vectorizer.{self.function}(:name)").bindparams(
            sa.bindparam("name", self.name, type_=sa.Text()))]

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r})"


@Operations.register_operation("disable_vectorizer")
class DisableVectorizerOp(_PauseOp):
    """Pause a vectorizer (pgai: ``ai.disable_vectorizer_schedule``).

    The workers stop embedding its changes within one catalog poll; the connector keeps
    streaming them into Kafka (the replication slot keeps advancing, no WAL is held back), so
    ``enable_vectorizer`` later catches up from where the workers stopped.
    """

    function = "disable_vectorizer"

    @classmethod
    def disable_vectorizer(cls, operations: Operations, name: str) -> Any:
        """Pause vectorizer ``name``: nothing is embedded until ``op.enable_vectorizer(name)``."""
        return operations.invoke(cls(name))

    def reverse(self) -> EnableVectorizerOp:
        return EnableVectorizerOp(self.name)


@Operations.register_operation("enable_vectorizer")
class EnableVectorizerOp(_PauseOp):
    """Resume a paused vectorizer (pgai: ``ai.enable_vectorizer_schedule``): the workers embed
    every change that waited in Kafka, then go on streaming."""

    function = "enable_vectorizer"

    @classmethod
    def enable_vectorizer(cls, operations: Operations, name: str) -> Any:
        """Resume vectorizer ``name`` (a no-op when it is not paused)."""
        return operations.invoke(cls(name))

    def reverse(self) -> DisableVectorizerOp:
        return DisableVectorizerOp(self.name)


# Offline migration contexts that already emitted the catalog install: an ``--sql`` script
# holds it once, before the first vectorizer operation, however many operations follow.
_offline_installed: weakref.WeakSet[MigrationContext] = weakref.WeakSet()


def _install_catalog_if_needed(operations: Operations) -> None:
    """Install or upgrade the catalog before the first operation that needs it.

    Online, the database says which version it has and the script runs only when it is missing
    or older; offline, nothing can be asked, so the script (idempotent) is emitted once per run.
    """
    context = operations.migration_context
    if context.as_sql:
        if context in _offline_installed:
            return
        _offline_installed.add(context)
    else:
        bind = operations.get_bind()
        version = read_installed_version(lambda query: bind.exec_driver_sql(query).scalar())
        if version is not None and version >= CATALOG_VERSION:
            return
    for statement in catalog_install_statements():
        operations.execute(statement)


def _run(operations: Operations, operation: CreateVectorizerOp | DropVectorizerOp
         | AlterVectorizerOp | _PauseOp) -> None:
    _install_catalog_if_needed(operations)
    for statement in operation.statements():
        operations.execute(statement)


_registered = False


def register_operations() -> None:
    """Make ``op.create_vectorizer``, ``op.drop_vectorizer``, ``op.alter_vectorizer``,
    ``op.disable_vectorizer`` and ``op.enable_vectorizer`` available.

    Call it once in ``env.py`` (idempotent). It also registers the autogenerate renderers so
    generated migrations can contain these operations.
    """
    global _registered
    if _registered:
        return
    for op_cls in (CreateVectorizerOp, DropVectorizerOp, AlterVectorizerOp, DisableVectorizerOp,
                   EnableVectorizerOp):
        Operations.implementation_for(op_cls)(_run)
    from pgai_orm.alembic import autogenerate  # noqa: F401  (registers renderers)

    _registered = True
