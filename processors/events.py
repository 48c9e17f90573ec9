"""Change events as the connector writes them to Kafka, parsed and reduced to one per row.

The wire format is fixed in ``docs/architecture.md`` ("Events on the topics"). This module turns
a record's key and value bytes into typed events and reduces a batch to the newest event per
row: a batch often holds several changes of one row (a burst of edits), and only the last one
decides what the store must hold, so embedding the others would be wasted work.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import orjson

RowOp = Literal["insert", "update", "delete", "read"]
_ROW_OPS: frozenset[str] = frozenset(("insert", "update", "delete", "read"))


class EventFormatError(ValueError):
    """A record that does not follow the event contract (a connector bug, never user data)."""


def canonical_key(key: Mapping[str, Any]) -> str:
    """The key as canonical JSON, byte-identical to the connector's Kafka key."""
    return orjson.dumps(dict(key), option=orjson.OPT_SORT_KEYS).decode()


@dataclass(frozen=True, slots=True)
class RowChange:
    """One row change: ``insert``, ``update``, ``read`` (snapshot) or ``delete``.

    ``row`` is the new row without the columns named in ``unchanged_toast`` (values that did not
    change and were not sent); it is ``None`` for deletes.
    """

    op: RowOp
    lsn: int
    key: dict[str, Any]
    key_json: str
    row: dict[str, Any] | None
    unchanged_toast: frozenset[str] = field(default_factory=frozenset)

    @property
    def is_delete(self) -> bool:
        return self.op == "delete"


@dataclass(frozen=True, slots=True)
class Truncate:
    """``TRUNCATE`` of the source table at ``lsn``; sent once to every partition."""

    lsn: int


Event = RowChange | Truncate


def parse_event(value: bytes | None) -> Event | None:
    """Parse a record value; ``None`` for a tombstone (the null value that follows a delete)."""
    if value is None:
        return None
    try:
        data = orjson.loads(value)
    except orjson.JSONDecodeError as exc:
        raise EventFormatError(f"event value is not JSON: {exc}") from None
    if not isinstance(data, dict):
        raise EventFormatError(f"event value must be a JSON object, got {type(data).__name__}")
    op = data.get("op")
    lsn = data.get("lsn")
    if not isinstance(lsn, int):
        raise EventFormatError(f"event lsn must be an integer, got {lsn!r}")
    if op == "truncate":
        return Truncate(lsn)
    if op not in _ROW_OPS:
        raise EventFormatError(f"unknown event op {op!r}")
    key = data.get("key")
    if not isinstance(key, dict) or not key:
        raise EventFormatError(f"event key must be a non-empty JSON object, got {key!r}")
    row = data.get("row")
    if op == "delete":
        row = None
    elif not isinstance(row, dict):
        raise EventFormatError(f"{op} event without a row")
    return RowChange(
        op=op,
        lsn=lsn,
        key=key,
        key_json=canonical_key(key),
        row=row,
        unchanged_toast=frozenset(data.get("unchanged_toast") or ()),
    )


@dataclass(frozen=True, slots=True)
class ReducedBatch:
    """What a batch means for the store.

    ``truncate_lsn`` is the highest truncate in the batch (applied first); ``changes`` holds the
    newest change per key, each newer than that truncate, in first-seen key order.
    """

    truncate_lsn: int | None
    changes: list[RowChange]


def reduce_newest(events: Iterable[Event | None]) -> ReducedBatch:
    """Keep the newest change per key (highest ``lsn``) and drop changes older than a truncate.

    A change older than a truncate in the same batch describes a row the truncate removed, so
    it must not come back. Tombstones (``None``) carry nothing and are dropped.
    """
    newest: dict[str, RowChange] = {}
    truncate_lsn: int | None = None
    for event in events:
        if event is None:
            continue
        if isinstance(event, Truncate):
            truncate_lsn = event.lsn if truncate_lsn is None else max(truncate_lsn, event.lsn)
            continue
        seen = newest.get(event.key_json)
        if seen is None or event.lsn > seen.lsn:
            newest[event.key_json] = event
    changes = [
        change for change in newest.values() if truncate_lsn is None or change.lsn > truncate_lsn
    ]
    return ReducedBatch(truncate_lsn, changes)
