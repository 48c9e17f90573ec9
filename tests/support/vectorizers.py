"""The catalog and vectorizers in a test database, made the way users make them.

``create_vectorizer`` runs ``op.create_vectorizer`` through Alembic's real Operations API, as a
migration would, so every test creates its vectorizers through the one operation users call
(and the catalog gets installed by it when missing). ``install_catalog`` is the versioned
install the services run (:func:`pgai_orm.catalog.ensure_catalog`), for tests that need the
catalog before any vectorizer exists.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import psycopg
from alembic.migration import MigrationContext
from alembic.operations import Operations
from sqlalchemy import Engine, create_engine
from sqlalchemy.exc import DBAPIError

from infra.faults import create_in_migration
from infra.urls import sqlalchemy_url
from pgai_orm.alembic import register_operations
from pgai_orm.catalog import ensure_catalog
from pgai_orm.configuration import (
    ChunkingRecursiveCharacterTextSplitterConfig,
    EmbeddingLocalConfig,
    FormattingPythonTemplateConfig,
    VectorizerConfig,
)


def install_catalog(url: str) -> None:
    """Install (or upgrade) the catalog in the database at ``url``, as the services do."""
    with psycopg.connect(url, autocommit=True) as conn:
        ensure_catalog(conn)


def sentence_config(chunk_column: str = "content", template: str = "$title - $chunk") -> VectorizerConfig:
    """The offline default model on ``chunk_column``, about one chunk per sentence."""
    return VectorizerConfig(
        embedding=EmbeddingLocalConfig(),
        chunking=ChunkingRecursiveCharacterTextSplitterConfig(
            chunk_column=chunk_column, chunk_size=200, chunk_overlap=0, separators=[". ", " "]),
        formatting=FormattingPythonTemplateConfig(template=template),
    )


def create_vectorizer(db: str | Engine, source: str,
                      config: VectorizerConfig | Mapping[str, Any] | None = None, *,
                      chunk_column: str = "content", template: str = "$title - $chunk",
                      **options: Any) -> int:
    """``op.create_vectorizer`` on ``source`` in one transaction; the new vectorizer's id.

    ``db`` is a ``postgresql://`` URL or an engine. ``source`` is ``table`` or
    ``schema.table`` (pass ``source_schema=`` for names with a dot). ``config`` is a
    ``VectorizerConfig`` or its catalog dict (e.g. :func:`tests.support.configs.local_config`);
    without one it is :func:`sentence_config` of ``chunk_column`` and ``template``.
    ``options`` are the operation's other arguments (``name``, ``target_schema``,
    ``target_table``, ``view_*``, ``source_schema``, ...); a config part among them
    (``embedding=...``) replaces that part of ``config``.

    A statement Postgres refuses raises the driver's error (a ``psycopg.Error`` with the
    catalog function's message), not SQLAlchemy's wrapper of it.
    """
    if config is None:
        config = sentence_config(chunk_column, template)
    elif not isinstance(config, VectorizerConfig):
        config = VectorizerConfig.from_dict(dict(config))
    register_operations()
    engine = create_engine(sqlalchemy_url(db)) if isinstance(db, str) else db
    try:
        with engine.begin() as conn:
            op = Operations(MigrationContext.configure(conn))
            return create_in_migration(op, source, config, **options)
    except DBAPIError as exc:
        if exc.orig is None:
            raise
        raise exc.orig from None
    finally:
        if isinstance(db, str):
            engine.dispose()
