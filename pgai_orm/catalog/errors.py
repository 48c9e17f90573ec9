"""``vectorizer.errors``: why a row (or a whole source table) is not in the store.

The workers record one error per failed row in the batch's transaction and clear a row's
errors once it is embedded (or deleted) successfully; the supervisor records a ``source`` error
when a source table is dropped under its vectorizer. ``vectorizer errors`` and ``vectorizer
status`` read them (:mod:`pgai_orm.catalog.report`).
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "CLEAR_ROW_ERRORS_SQL",
    "RECORD_ROW_ERRORS_SQL",
    "STEPS",
    "record_missing_sources",
]

#: ``source``: the whole source table is gone (recorded by the worker supervisor, no key)
STEPS = ("source", "load", "chunk", "format", "embed", "store")

RECORD_ROW_ERRORS_SQL = (
    "INSERT INTO vectorizer.errors (vectorizer_id, version, pk, step, message, details, lsn)"
    " SELECT %s, %s, x.pk, x.step, x.message, x.details, '0/0'::pg_lsn + x.lsn"
    " FROM jsonb_to_recordset(%s::jsonb)"
    " AS x(pk jsonb, step text, message text, details jsonb, lsn numeric)"
)
"""Params ``(vectorizer_id, version, errors_json)``; each error ``{pk, step, message, details,
lsn}`` with ``lsn`` an integer."""

CLEAR_ROW_ERRORS_SQL = (
    "DELETE FROM vectorizer.errors WHERE vectorizer_id = %s AND version = %s"
    " AND pk = ANY(%s::jsonb[])"
)
"""Params ``(vectorizer_id, version, [key_json, ...])``."""

_SOURCE_EXISTS = "to_regclass(quote_ident(v.source_schema) || '.' || quote_ident(v.source_table))"


def record_missing_sources(conn: Any) -> list[str]:
    """Record a ``source`` error for each vectorizer whose source table was dropped, once.

    ``DROP TABLE`` of a source fails on the vectorizer's view; with ``CASCADE`` it goes through,
    and from then on no change can arrive. The store is kept as it was (nothing is deleted
    behind the user's back) and the error says what to do. When a table of that name exists
    again the error is cleared. Returns the messages newly recorded (for the log).
    """
    conn.execute(
        "DELETE FROM vectorizer.errors e USING vectorizer.vectorizers v"
        f" WHERE e.vectorizer_id = v.id AND e.step = 'source' AND {_SOURCE_EXISTS} IS NOT NULL")
    rows = conn.execute(
        "INSERT INTO vectorizer.errors (vectorizer_id, version, pk, step, message)"
        " SELECT v.id, v.config_version, NULL, 'source', format("
        "'source table %I.%I of vectorizer %s no longer exists: its store %I.%I is kept as it"
        " was and no change can arrive; drop the vectorizer (op.drop_vectorizer)',"
        " v.source_schema, v.source_table, v.name, v.target_schema, v.target_table)"
        f" FROM vectorizer.vectorizers v WHERE {_SOURCE_EXISTS} IS NULL AND NOT EXISTS ("
        "  SELECT 1 FROM vectorizer.errors e WHERE e.vectorizer_id = v.id AND e.step = 'source')"
        " RETURNING message").fetchall()
    return [r[0] for r in rows]
