"""``vectorizer.errors``: why a row (or a whole source table, or a whole version) is not in the store.

The workers record one error per failed row in the batch's transaction and clear a row's
errors once it is embedded (or deleted) successfully; the supervisor records a ``source`` error
when a source table is dropped under its vectorizer. A worker process that cannot start (an
API key missing from its environment, an extra not installed) records one ``start`` error for
its version, kept while it keeps failing and deleted by the first process of that version that
starts. ``vectorizer errors`` and ``vectorizer status`` read them
(:mod:`pgai_orm.catalog.report`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson

__all__ = [
    "CLEAR_ROW_ERRORS_SQL",
    "CLEAR_START_ERROR_SQL",
    "RECORD_ROW_ERRORS_SQL",
    "STEPS",
    "StartError",
    "clear_stale_start_errors",
    "record_missing_sources",
    "record_schema_errors",
    "record_start_error",
    "start_errors",
]

#: ``source``: the whole source table is gone (recorded by the worker supervisor, no key);
#: ``start``: the worker processes of a version cannot start (recorded by them, no key);
#: ``schema``: a column a version reads was renamed or dropped in the source, or its partitions
#: changed with nothing to resync it (``vectorizer.check_sources``, no key)
STEPS = ("source", "start", "schema", "load", "chunk", "format", "embed", "store")

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
        "'source table %I.%I of vectorizer %s no longer exists: %s and no change can arrive;"
        " drop the vectorizer (op.drop_vectorizer)',"
        " v.source_schema, v.source_table, v.name, CASE WHEN v.target_table IS NULL"
        "  THEN 'its embedding column went with it'"
        "  ELSE format('its store %I.%I is kept as it was', v.target_schema, v.target_table) END)"
        f" FROM vectorizer.vectorizers v WHERE {_SOURCE_EXISTS} IS NULL AND NOT EXISTS ("
        "  SELECT 1 FROM vectorizer.errors e WHERE e.vectorizer_id = v.id AND e.step = 'source')"
        " RETURNING message").fetchall()
    return [r[0] for r in rows]


# -- start: a version whose worker processes cannot start -----------------------------------------

#: Serialises the writers of one vectorizer's ``start`` errors (several processes of a version,
#: on several machines, fail at the same moment): ``pg_advisory_xact_lock(key, vectorizer_id)``.
_START_LOCK_SQL = "SELECT pg_advisory_xact_lock(hashtext('vectorizer.errors:start'), %s)"

CLEAR_START_ERROR_SQL = (
    "DELETE FROM vectorizer.errors WHERE vectorizer_id = %s AND version = %s AND step = 'start'"
)
"""Params ``(vectorizer_id, version)``: a process of that version started, so it can start."""


@dataclass(frozen=True, slots=True)
class StartError:
    """Why the worker processes of one config version cannot start."""

    vectorizer_id: int
    version: int
    name: str
    message: str
    attempts: int


def record_start_error(conn: Any, vectorizer_id: int, version: int, message: str,
                       details: dict[str, Any] | None = None) -> bool:
    """Record that a worker process of the version cannot start, once per version and cause.

    While the same message is recorded already, only ``details.attempts`` and
    ``details.last_failed_at`` move (``recorded_at`` stays the first failure); a different
    message replaces it. ``details`` (JSON-serialisable) is merged in. Returns True when the
    row is new or its message changed. ``conn`` is a psycopg connection in autocommit mode.
    """
    extra = orjson.dumps(details or {}).decode()
    with conn.transaction():
        conn.execute(_START_LOCK_SQL, (vectorizer_id,))
        again = conn.execute(
            "UPDATE vectorizer.errors SET details = coalesce(details, '{}'::jsonb) || %s::jsonb"
            " || jsonb_build_object('attempts', coalesce((details->>'attempts')::int, 1) + 1,"
            "                       'last_failed_at', now())"
            " WHERE vectorizer_id = %s AND version = %s AND step = 'start' AND message = %s"
            " RETURNING id", (extra, vectorizer_id, version, message)).fetchall()
        if again:
            return False
        conn.execute(CLEAR_START_ERROR_SQL, (vectorizer_id, version))
        conn.execute(
            "INSERT INTO vectorizer.errors (vectorizer_id, version, pk, step, message, details)"
            " VALUES (%s, %s, NULL, 'start', %s,"
            "         %s::jsonb || jsonb_build_object('attempts', 1, 'last_failed_at', now()))",
            (vectorizer_id, version, message, extra))
    return True


def start_errors(conn: Any) -> dict[tuple[int, int], StartError]:
    """The ``start`` errors recorded now, by ``(vectorizer_id, version)``."""
    rows = conn.execute(
        "SELECT e.vectorizer_id, e.version, v.name, e.message,"
        "       coalesce((e.details->>'attempts')::int, 1)"
        "  FROM vectorizer.errors e JOIN vectorizer.vectorizers v ON v.id = e.vectorizer_id"
        " WHERE e.step = 'start' ORDER BY e.id").fetchall()
    return {(int(r[0]), int(r[1])): StartError(int(r[0]), int(r[1]), r[2], r[3], int(r[4]))
            for r in rows}


def clear_stale_start_errors(conn: Any) -> int:
    """Delete the ``start`` errors of versions no worker runs any more (retired or gone).

    A version that never started can be superseded (``op.alter_vectorizer`` with a working
    config) or dropped; its error would otherwise stay forever. Returns how many went.
    """
    cur = conn.execute(
        "DELETE FROM vectorizer.errors e WHERE e.step = 'start' AND NOT EXISTS ("
        "  SELECT 1 FROM vectorizer.config_versions cv WHERE cv.vectorizer_id = e.vectorizer_id"
        "   AND cv.version = e.version AND cv.status IN ('active', 'building'))")
    return int(cur.rowcount or 0)


# -- schema: the source changed under a version ----------------------------------------------------

def record_schema_errors(conn: Any) -> list[str]:
    """Record one ``schema`` error per vectorizer version whose source lost a column it reads
    (renamed: the workers follow it by attnum, the error says how to update the config; dropped)
    or whose partitions changed with no DDL event trigger to resync the table; an error goes
    when its cause does. The catalog function ``vectorizer.check_sources`` does it (the DDL event
    trigger calls it too, in the DDL's transaction). Returns the messages newly recorded.
    """
    return [r[0] for r in conn.execute("SELECT * FROM vectorizer.check_sources()").fetchall()]
