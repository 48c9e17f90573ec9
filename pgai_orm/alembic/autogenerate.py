"""Autogenerate support: vectorizers declared on the MetaData become migration operations.

pgai has no autogenerate support. Here an application declares its vectorizers next to its models
with :func:`declare_vectorizer`; ``alembic revision --autogenerate`` compares those declarations
with the catalog and writes ``op.create_vectorizer`` / ``op.alter_vectorizer`` /
``op.drop_vectorizer`` calls, rendered with the config classes' ``repr`` (valid Python).

Only a MetaData that holds declarations (``metadata.info["pgai_vectorizers"]``, even empty) is
compared, so an application that writes its vectorizer migrations by hand never gets a drop
generated for vectorizers it did not declare.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from alembic.autogenerate import comparators, renderers
from alembic.autogenerate.api import AutogenContext
from alembic.operations.ops import UpgradeOps
from alembic.util import DispatchPriority, PriorityDispatchResult
from sqlalchemy import MetaData, text

from pgai_orm.alembic.operations import AlterVectorizerOp, CreateVectorizerOp, DropVectorizerOp
from pgai_orm.configuration import ParsingAutoConfig, VectorizerConfig
from pgai_orm.names import MANAGED_TABLES_KEY

DECLARATIONS_KEY = "pgai_vectorizers"

_CONFIG_FIELDS = ("embedding", "chunking", "formatting", "indexing", "processing", "loading",
                  "parsing", "text_indexing")


def declare_vectorizer(metadata: MetaData, source: str, **kwargs: Any) -> CreateVectorizerOp:
    """Declare a vectorizer on ``metadata`` for autogenerate; takes ``create_vectorizer``'s arguments.

    The store table is added to ``metadata.info["pgai_managed_tables"]`` so that the README's
    ``include_object`` filter keeps autogenerate from treating it as an unknown table.
    """
    operation = CreateVectorizerOp(source, **kwargs)
    declarations: dict[str, CreateVectorizerOp] = metadata.info.setdefault(DECLARATIONS_KEY, {})
    declarations[_declared_name(operation)] = operation
    if operation.config.destination is None:  # a column destination has no store table
        metadata.info.setdefault(MANAGED_TABLES_KEY, set()).add(operation._qualified_target())
    return operation


def _declared_name(operation: CreateVectorizerOp) -> str:
    if operation.name:
        return operation.name
    if operation.config.destination is not None:  # pgai's default for a column destination
        return (f"{operation.source_schema or 'public'}_{operation.source}_"
                f"{operation.config.destination.embedding_column}")
    schema = operation.view_schema or operation.target_schema or operation.source_schema or "public"
    return f"{schema}_{operation.view_table or operation.source + '_embedding'}"


def _catalog_vectorizers(connection: Any) -> dict[str, CreateVectorizerOp]:
    """The catalog's vectorizers as the create operations that would make them again."""
    exists = connection.execute(text("SELECT to_regclass('vectorizer.vectorizers')")).scalar()
    if exists is None:
        return {}
    # The newest version is what the last migration asked for, even while it is still building.
    rows = connection.execute(text(
        "SELECT v.name, v.source_schema, v.source_table, v.target_schema, v.target_table, "
        "v.view_schema, v.view_table, cv.config FROM vectorizer.vectorizers v "
        "JOIN LATERAL (SELECT config FROM vectorizer.config_versions c "
        "WHERE c.vectorizer_id = v.id AND c.status <> 'retired' "
        "ORDER BY version DESC LIMIT 1) cv ON true"))
    found: dict[str, CreateVectorizerOp] = {}
    for name, s_schema, s_table, t_schema, t_table, v_schema, v_table, config in rows:
        cfg = VectorizerConfig.from_dict(config)
        found[name] = CreateVectorizerOp(
            s_table, source_schema=s_schema, name=name, target_schema=t_schema,
            target_table=t_table, view_schema=v_schema, view_table=v_table,
            destination=cfg.destination,
            **{f: getattr(cfg, f) for f in _CONFIG_FIELDS if getattr(cfg, f) is not None})
    return found


# LAST: tables are compared first, so a new table is created before its vectorizer.
@comparators.dispatch_for("schema", priority=DispatchPriority.LAST)
def compare_vectorizers(autogen_context: AutogenContext, upgrade_ops: UpgradeOps,
                        schemas: set[str | None]) -> PriorityDispatchResult:
    """Emit create/alter/drop operations for the difference between declarations and catalog."""
    metadata = autogen_context.metadata
    metadatas: Sequence[MetaData | None] = (
        list(metadata) if isinstance(metadata, (list, tuple)) else [metadata])  # type: ignore[list-item]  # a list of MetaData, or one
    declared: dict[str, CreateVectorizerOp] = {}
    compared = False
    for md in metadatas:
        if md is not None and DECLARATIONS_KEY in md.info:
            compared = True
            declared.update(md.info[DECLARATIONS_KEY])
    if not compared or autogen_context.connection is None:
        return PriorityDispatchResult.CONTINUE
    existing = _catalog_vectorizers(autogen_context.connection)
    for name, operation in declared.items():
        if name not in existing:
            upgrade_ops.ops.append(operation)
            continue
        current = existing[name].config
        changes = {f: getattr(operation.config, f) for f in _CONFIG_FIELDS
                   if getattr(operation.config, f) != getattr(current, f)
                   and getattr(operation.config, f) is not None}
        if changes:
            alter = AlterVectorizerOp(name, **changes)
            alter.previous = {f: getattr(current, f) for f in changes}
            upgrade_ops.ops.append(alter)
    for name in sorted(set(existing) - set(declared)):
        drop = DropVectorizerOp(name=name, drop_all=True)
        drop.recreate = existing[name]
        upgrade_ops.ops.append(drop)
    return PriorityDispatchResult.CONTINUE


_CONFIG_IMPORT = "from pgai_orm.configuration import "


def _import_config_classes(autogen_context: AutogenContext, *configs: Any) -> None:
    """One ``from pgai_orm.configuration import ...`` line for the whole migration: each op adds
    its classes to the line the ops before it wrote, so no class is imported twice."""
    names = {type(c).__name__ for c in configs if c is not None}
    if not names:
        return
    for line in [i for i in autogen_context.imports if i.startswith(_CONFIG_IMPORT)]:
        names.update(n.strip() for n in line[len(_CONFIG_IMPORT):].split(","))
        autogen_context.imports.discard(line)
    autogen_context.imports.add(_CONFIG_IMPORT + ", ".join(sorted(names)))


def _kwargs(pairs: list[tuple[str, Any]]) -> str:
    return ", ".join(f"{k}={v!r}" for k, v in pairs if v is not None and v != [] and v is not False)


@renderers.dispatch_for(CreateVectorizerOp)
def render_create_vectorizer(autogen_context: AutogenContext, op: CreateVectorizerOp) -> str:
    config = op.config
    configs = [getattr(config, f) for f in _CONFIG_FIELDS]
    _import_config_classes(autogen_context, *configs, config.destination)
    args = _kwargs([
        ("source", op.source), ("source_schema", op.source_schema), ("name", op.name),
        ("target_schema", op.target_schema), ("target_table", op.target_table),
        ("view_schema", op.view_schema), ("view_table", op.view_table),
        # parsing: only when not the default (ParsingAutoConfig), as pgai writes it
        *[(f, getattr(config, f)) for f in _CONFIG_FIELDS
          if not (f == "parsing" and config.parsing == ParsingAutoConfig())],
        ("destination", config.destination),
        ("if_not_exists", op.if_not_exists), ("grant_to", op.grant_to),
    ])
    return f"op.create_vectorizer({args})"


@renderers.dispatch_for(AlterVectorizerOp)
def render_alter_vectorizer(autogen_context: AutogenContext, op: AlterVectorizerOp) -> str:
    _import_config_classes(autogen_context, *op.changes.values())
    return f"op.alter_vectorizer({_kwargs([('name', op.name), *sorted(op.changes.items())])})"


@renderers.dispatch_for(DropVectorizerOp)
def render_drop_vectorizer(autogen_context: AutogenContext, op: DropVectorizerOp) -> str:
    args = _kwargs([("name", op.name), ("target_table", op.target_table),
                    ("drop_all", op.drop_all), ("if_exists", op.if_exists)])
    return f"op.drop_vectorizer({args})"
