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

from pgai_orm.catalog.errors import CLEAR_ROW_ERRORS_SQL, RECORD_ROW_ERRORS_SQL

#: ``async publish(key, value)`` that returns once the broker has acknowledged the record.
Publish = Callable[[bytes, bytes], Awaitable[None]]

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
        await conn.execute(RECORD_ROW_ERRORS_SQL,
                           (self.vectorizer_id, self.version, orjson.dumps(payload).decode()))

    async def clear(self, conn: AsyncConnection[Any], keys: Sequence[str]) -> None:
        """Forget the errors of rows that were just embedded (or deleted) successfully."""
        if not keys:
            return
        await conn.execute(CLEAR_ROW_ERRORS_SQL, (self.vectorizer_id, self.version, list(keys)))
