"""Pause and resume, and what the workers measured: ``vectorizers.paused_at`` and
``vectorizer.worker_progress``.

A paused vectorizer (pgai: ``ai.disable_vectorizer_schedule``) keeps its catalog row, its topic
and its consumer groups' committed offsets; the workers only stop serving its versions, so a
resume continues where they stopped. The workers record every few seconds, per served version,
how many events its group has not committed yet and the last source LSN they applied, which the
views ``vectorizer.vectorizer_status`` and ``vectorizer.vectorizer_errors`` (``catalog.sql``)
show to SQL-only users and dashboards. One module for both because the workers read the first and
write the second in the same poll.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg

from pgai_orm.catalog.report import UnknownVectorizerError

__all__ = [
    "RECORD_PROGRESS_SQL",
    "ServedVersion",
    "pause_vectorizer",
    "read_served",
    "resume_vectorizer",
]


PAUSE_SQL = "SELECT vectorizer.disable_vectorizer(%s)"
RESUME_SQL = "SELECT vectorizer.enable_vectorizer(%s)"

_SERVED_SQL = (
    "SELECT cv.vectorizer_id, cv.version, v.name, v.source_schema, v.source_table,"
    "       current_database(), v.paused_at"
    "  FROM vectorizer.config_versions cv JOIN vectorizer.vectorizers v ON v.id = cv.vectorizer_id"
    " WHERE cv.status IN ('active', 'building') ORDER BY cv.vectorizer_id, cv.version"
)

RECORD_PROGRESS_SQL = (
    "INSERT INTO vectorizer.worker_progress AS p"
    " (vectorizer_id, version, pending, measured_at, last_applied_lsn, last_applied_at)"
    " SELECT %(id)s, %(version)s, %(pending)s::bigint,"
    "        CASE WHEN %(pending)s::bigint IS NOT NULL THEN now() END,"
    "        '0/0'::pg_lsn + %(lsn)s::numeric, %(applied_at)s::timestamptz"
    "  WHERE EXISTS (SELECT 1 FROM vectorizer.config_versions"
    "                 WHERE vectorizer_id = %(id)s AND version = %(version)s)"
    " ON CONFLICT (vectorizer_id, version) DO UPDATE"
    " SET pending = coalesce(EXCLUDED.pending, p.pending),"
    "     measured_at = coalesce(EXCLUDED.measured_at, p.measured_at),"
    "     last_applied_lsn = greatest(p.last_applied_lsn, EXCLUDED.last_applied_lsn),"
    "     last_applied_at = greatest(p.last_applied_at, EXCLUDED.last_applied_at),"
    "     updated_at = now()"
)
"""Params ``{id, version, pending, lsn, applied_at}`` (each of the last three may be None: keep
what is recorded). Workers of one group write the same pending and the greatest LSN; a version
dropped meanwhile is skipped rather than violating the foreign key."""


@dataclass(frozen=True, slots=True)
class ServedVersion:
    """A config version that needs processors, with what the workers need to know of it."""

    vectorizer_id: int
    version: int
    name: str
    source_schema: str
    source_table: str
    database: str
    paused_at: datetime | None

    @property
    def key(self) -> tuple[int, int]:
        return (self.vectorizer_id, self.version)

    @property
    def paused(self) -> bool:
        return self.paused_at is not None


def read_served(conn: Any) -> list[ServedVersion]:
    """Every ``active`` and ``building`` version, paused ones included (their ``paused_at``)."""
    return [ServedVersion(int(r[0]), int(r[1]), r[2], r[3], r[4], r[5], r[6])
            for r in conn.execute(_SERVED_SQL).fetchall()]


def _set_paused(conn: Any, name: str, sql: str) -> None:
    try:
        conn.execute(sql, (name,))
    except psycopg.errors.UndefinedObject:
        raise UnknownVectorizerError(name) from None


def pause_vectorizer(conn: Any, name: str) -> None:
    """Pause vectorizer ``name`` (``vectorizer.disable_vectorizer``); raises
    :class:`UnknownVectorizerError` when there is none. Idempotent."""
    _set_paused(conn, name, PAUSE_SQL)


def resume_vectorizer(conn: Any, name: str) -> None:
    """Resume vectorizer ``name`` (``vectorizer.enable_vectorizer``). Idempotent."""
    _set_paused(conn, name, RESUME_SQL)
