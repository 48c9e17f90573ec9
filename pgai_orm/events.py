"""The change event on the topics: the one contract between the connector and the workers.

The connector writes these records and the workers read them; tests and benchmarks build them
with the same code. The format is described for humans in ``docs/architecture.md`` ("Events
on the topics"); this module is its only implementation.

* **Key**: the primary key as canonical JSON (:func:`canonical_key`: sorted keys, orjson's
  compact form). The snapshot and the stream render values the same way, so a row's key bytes
  are identical on both paths and Kafka's partitioner sends both to one partition.
* **Value**: a JSON object ``{"op", "lsn", "commit_lsn", "commit_time", "xid", "schema",
  "table", "key", "row", "unchanged_toast", "source"}``; ``op`` is ``insert``, ``update``,
  ``delete``, ``read`` (snapshot) or ``truncate``. A delete is followed by a tombstone (same key, null
  value). ``unchanged_toast`` lists columns that did not change and were not sent; they are
  absent from ``row``. ``source`` is the catalog instance id (``vectorizer.instance.id``) of the
  database that wrote the event: one random id per database incarnation, so a worker drops
  events of an earlier incarnation of its database (dropped and re-created under the same name)
  or of another server writing to the same topic. Missing or null in events written before it
  existed (decoded as ``None``, accepted by every worker).
* **Truncate fan-out**: a truncate has the key :data:`TRUNCATE_KEY` and goes to *every*
  partition of the topic (:meth:`Truncate.records`), so each worker that owns a partition
  applies it in order with the changes of its own keys.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import orjson

from pgai_orm.errors import VectorizerError

__all__ = [
    "TRUNCATE_KEY",
    "Event",
    "EventFormatError",
    "RowChange",
    "RowOp",
    "Transaction",
    "Truncate",
    "canonical_key",
    "decode_event",
    "encode_row_change",
]

RowOp = Literal["insert", "update", "delete", "read"]
_ROW_OPS: frozenset[str] = frozenset(("insert", "update", "delete", "read"))
TRUNCATE_KEY = b'{"__truncate__":true}'
_SORT = orjson.OPT_SORT_KEYS


class EventFormatError(VectorizerError, ValueError):
    """A record that does not follow the event contract (a connector bug, never user data)."""


def _dumps(obj: Any, option: int = 0) -> bytes:
    """orjson.dumps, copied to an exact-size bytes object.

    orjson returns bytes that keep its whole output buffer (about 8 KiB for a 1 KiB event).
    Events wait in the connector's publisher until Kafka acknowledges them, so without the copy
    the connector would hold about 8x the bytes its in-flight bound counts.
    """
    return bytes(memoryview(orjson.dumps(obj, option=option)))


def canonical_key(key: Mapping[str, Any]) -> bytes:
    """The primary key as canonical JSON: the Kafka key, and ``applied_state.pk``."""
    return _dumps(key if type(key) is dict else dict(key), _SORT)


@dataclass(frozen=True, slots=True)
class Transaction:
    """What every event of one transaction shares. Snapshot ``read`` events have the snapshot's
    consistent point as ``commit_lsn`` and no time or xid."""

    commit_lsn: int | None = None
    commit_time: str | None = None
    xid: int | None = None


NO_TRANSACTION = Transaction()


def encode_row_change(op: str, lsn: int, txn: Transaction, schema: str, table: str,
                      key: Mapping[str, Any] | None, row: Mapping[str, Any] | None,
                      unchanged_toast: Iterable[str] = (), source: str | None = None) -> bytes:
    """The value bytes of one event. The connector's hot path calls this directly (no event
    object per change); :meth:`RowChange.encode` and :meth:`Truncate.encode` call it too."""
    return _dumps({
        "op": op,
        "lsn": lsn,
        "commit_lsn": txn.commit_lsn,
        "commit_time": txn.commit_time,
        "xid": txn.xid,
        "schema": schema,
        "table": table,
        "key": key,
        "row": row,
        "unchanged_toast": unchanged_toast if type(unchanged_toast) is list else list(unchanged_toast),
        "source": source,
    })


@dataclass(frozen=True, slots=True)
class RowChange:
    """One row change: ``insert``, ``update``, ``read`` (snapshot) or ``delete``.

    ``row`` is the new row without the columns named in ``unchanged_toast``; ``None`` for
    deletes. ``key_json`` is :func:`canonical_key` as text (how the store addresses the row).
    Equality is about what the change means for the store; the transaction and the table ride
    along for logs and are not compared.
    """

    op: RowOp
    lsn: int
    key: dict[str, Any]
    key_json: str
    row: dict[str, Any] | None
    unchanged_toast: frozenset[str] = field(default_factory=frozenset)
    txn: Transaction = field(default=NO_TRANSACTION, compare=False)
    schema: str | None = field(default=None, compare=False)
    table: str | None = field(default=None, compare=False)
    #: the catalog instance id of the database that wrote the event (None: written before it existed)
    source: str | None = field(default=None, compare=False)

    @classmethod
    def of(cls, op: RowOp, lsn: int, key: dict[str, Any], row: dict[str, Any] | None, *,
           unchanged_toast: Iterable[str] = (), txn: Transaction = NO_TRANSACTION,
           schema: str | None = None, table: str | None = None,
           source: str | None = None) -> RowChange:
        """A change with its ``key_json`` computed from ``key``."""
        return cls(op, lsn, key, canonical_key(key).decode(), None if op == "delete" else row,
                   frozenset(unchanged_toast), txn, schema, table, source)

    @property
    def is_delete(self) -> bool:
        return self.op == "delete"

    def encode(self) -> tuple[bytes, bytes]:
        """``(key, value)`` of the Kafka record (a delete's tombstone is a separate record)."""
        value = encode_row_change(self.op, self.lsn, self.txn, self.schema or "",
                                  self.table or "", self.key, self.row,
                                  sorted(self.unchanged_toast), self.source)
        return self.key_json.encode(), value


@dataclass(frozen=True, slots=True)
class Truncate:
    """``TRUNCATE`` of the source table at ``lsn``; sent once to every partition."""

    lsn: int
    txn: Transaction = field(default=NO_TRANSACTION, compare=False)
    schema: str | None = field(default=None, compare=False)
    table: str | None = field(default=None, compare=False)
    source: str | None = field(default=None, compare=False)

    def encode(self) -> tuple[bytes, bytes]:
        """``(key, value)`` of the record every partition gets."""
        value = encode_row_change("truncate", self.lsn, self.txn, self.schema or "",
                                  self.table or "", None, None, source=self.source)
        return TRUNCATE_KEY, value

    def records(self, partitions: Iterable[int]) -> list[tuple[int, bytes, bytes]]:
        """The fan-out: ``(partition, key, value)`` for each partition of the topic."""
        key, value = self.encode()
        return [(partition, key, value) for partition in partitions]


Event = RowChange | Truncate


def _optional_int(data: dict[str, Any], name: str) -> int | None:
    value = data.get(name)
    if value is not None and not isinstance(value, int):
        raise EventFormatError(f"event {name} must be an integer or null, got {value!r}")
    return value


def decode_event(value: bytes | None) -> Event | None:
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
    txn = Transaction(_optional_int(data, "commit_lsn"), data.get("commit_time"),
                      _optional_int(data, "xid"))
    schema, table = data.get("schema"), data.get("table")
    source = data.get("source")
    if source is not None and not isinstance(source, str):
        raise EventFormatError(f"event source must be a string or null, got {source!r}")
    if op == "truncate":
        return Truncate(lsn, txn, schema, table, source)
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
    return RowChange(op, lsn, key, canonical_key(key).decode(), row,
                     frozenset(data.get("unchanged_toast") or ()), txn, schema, table, source)
