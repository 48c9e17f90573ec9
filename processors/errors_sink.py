"""Where rows that cannot be embedded go: ``vectorizer.errors`` and the dead-letter topic.

A permanent failure of one row (the provider rejects its text, the template names a column the
row lacks, the text is too long) must neither stop the pipeline nor vanish: the row's error is
written in the same transaction as the batch, and published to ``<topic>.dlq`` so operators can
alert on it or re-drive it. The dead-letter message is published *before* the store commit, so a
crash in between duplicates it rather than losing it. Messages come from our own error classes,
which never carry an API key (embedders redact it); the row's text is not included either.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson
from psycopg import AsyncConnection

#: ``async publish(key, value)`` that returns once the broker has acknowledged the record.
Publish = Callable[[bytes, bytes], Awaitable[None]]

#: ``source``: the whole source table is gone (recorded by the worker supervisor, no key)
STEPS = ("source", "load", "chunk", "format", "embed", "store")


def dlq_topic_for(topic: str) -> str:
    """The dead-letter topic of a source topic."""
    return f"{topic}.dlq"


@dataclass(frozen=True, slots=True)
class RowError:
    """Why one source row could not be embedded at ``lsn``."""

    key_json: str
    lsn: int
    step: str
    message: str
    details: dict[str, Any] = field(default_factory=dict)


class ErrorSink:
    """Records row errors of one vectorizer version in the errors table and the DLQ."""

    def __init__(self, vectorizer_id: int, version: int, publish: Publish | None) -> None:
        self.vectorizer_id = vectorizer_id
        self.version = version
        self._publish = publish

    async def publish(self, errors: Sequence[RowError]) -> None:
        """Send one dead-letter record per error, keyed like the source event."""
        if self._publish is None:
            return
        now = dt.datetime.now(dt.UTC).isoformat()
        for error in errors:
            value = orjson.dumps({
                "vectorizer_id": self.vectorizer_id,
                "version": self.version,
                "key": orjson.Fragment(error.key_json),
                "lsn": error.lsn,
                "step": error.step,
                "message": error.message,
                "details": error.details,
                "recorded_at": now,
            })
            await self._publish(error.key_json.encode(), value)

    async def record(self, conn: AsyncConnection[Any], errors: Sequence[RowError]) -> None:
        """Insert the errors (inside the batch's transaction)."""
        if not errors:
            return
        payload = [
            {"pk": orjson.Fragment(e.key_json), "step": e.step, "message": e.message,
             "details": e.details, "lsn": e.lsn}
            for e in errors
        ]
        await conn.execute(
            "INSERT INTO vectorizer.errors (vectorizer_id, version, pk, step, message, details, lsn)"
            " SELECT %s, %s, x.pk, x.step, x.message, x.details, '0/0'::pg_lsn + x.lsn"
            " FROM jsonb_to_recordset(%s::jsonb)"
            " AS x(pk jsonb, step text, message text, details jsonb, lsn numeric)",
            (self.vectorizer_id, self.version, orjson.dumps(payload).decode()),
        )

    async def clear(self, conn: AsyncConnection[Any], keys: Sequence[str]) -> None:
        """Forget the errors of rows that were just embedded (or deleted) successfully."""
        if not keys:
            return
        await conn.execute(
            "DELETE FROM vectorizer.errors WHERE vectorizer_id = %s AND version = %s"
            " AND pk = ANY(%s::jsonb[])",
            (self.vectorizer_id, self.version, list(keys)),
        )
