"""Change events as the connector publishes them, made by the contract's own encoder.

Every event a test or its producer sends goes through :mod:`pgai_orm.events` (the only
implementation of the format), so a test can never drift from what the connector writes.
Records are ``(key, value)`` bytes, ready for a Kafka producer or for
:func:`pgai_orm.events.decode_event`. Malformed input is the one thing to write by hand.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from pgai_orm.events import RowChange, RowOp, Transaction, Truncate, canonical_key

COMMIT_TIME = "2026-11-24T10:00:00+00:00"


def _txn(lsn: int, xid: int) -> Transaction:
    """A transaction whose commit record follows the change at ``lsn``."""
    return Transaction(commit_lsn=lsn + 1, commit_time=COMMIT_TIME, xid=xid)


def row_change(op: RowOp, lsn: int, key: Mapping[str, Any], row: Mapping[str, Any] | None = None,
               *, unchanged_toast: Iterable[str] = (), schema: str = "public",
               table: str = "blog_posts", xid: int = 1,
               source: str | None = None) -> tuple[bytes, bytes]:
    """``(key, value)`` of one ``insert``/``update``/``read``/``delete`` at ``lsn``; ``source``
    is the catalog instance id of the writing database (None: an event from before it).

    ``row`` is what the connector would send: without the ``unchanged_toast`` columns, and
    ignored for a delete.
    """
    change = RowChange.of(op, lsn, dict(key), None if row is None else dict(row),
                          unchanged_toast=unchanged_toast, txn=_txn(lsn, xid), schema=schema,
                          table=table, source=source)
    return change.encode()


def tombstone(key: Mapping[str, Any]) -> tuple[bytes, None]:
    """The record that follows a delete: the same key, a null value."""
    return canonical_key(key), None


def truncate(lsn: int, *, schema: str = "public", table: str = "blog_posts",
             xid: int = 1, source: str | None = None) -> tuple[bytes, bytes]:
    """``(key, value)`` of a ``TRUNCATE`` at ``lsn`` (each partition gets this record)."""
    return Truncate(lsn, _txn(lsn, xid), schema, table, source).encode()


def truncate_records(lsn: int, partitions: Iterable[int], *, schema: str = "public",
                     table: str = "blog_posts", xid: int = 1,
                     source: str | None = None) -> list[tuple[int, bytes, bytes]]:
    """The truncate's fan-out: ``(partition, key, value)`` for every partition."""
    return Truncate(lsn, _txn(lsn, xid), schema, table, source).records(partitions)
