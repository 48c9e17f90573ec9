"""Decoded pgoutput changes -> Kafka records (key bytes, value bytes) per the event contract.

The contract lives in ``docs/architecture.md`` ("Events on the topics"); this module is its only
writer. It holds no I/O: a :class:`ChangeEncoder` learns relations and types from the stream and
turns Insert/Update/Delete/Truncate messages into :class:`Record` s; the snapshot uses
:func:`row_record` with the same renderer so a row's key bytes are identical on both paths.

Decisions made here, and why:

* The key is the primary key as named by the catalog (``source_pk``), not pgoutput's key flags:
  under ``REPLICA IDENTITY FULL`` every column is flagged, which would make the whole row the key.
* A primary-key change (an Update carrying the old key, ``'K'``, or under FULL an old row whose
  key differs) becomes ``delete`` of the old key, its tombstone, and ``insert`` of the new one:
  the old key's partition and the new key's partition each see a self-contained history.
* Unchanged TOAST columns are left out of ``row`` and listed in ``unchanged_toast``; sending
  ``null`` or ``""`` would erase text downstream.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import orjson

from connector.pgoutput import (
    UNCHANGED_TOAST,
    Begin,
    Column,
    Delete,
    Insert,
    Relation,
    Truncate,
    Type,
    Update,
    pg_time_to_datetime,
)
from connector.values import ValueRenderer

__all__ = [
    "TRUNCATE_KEY",
    "ChangeEncoder",
    "Record",
    "TableId",
    "TxnInfo",
    "key_bytes",
    "row_record",
]

TableId = tuple[str, str]  # (schema, table)
TRUNCATE_KEY = b'{"__truncate__":true}'
_SORT = orjson.OPT_SORT_KEYS


class Record(NamedTuple):
    """One Kafka record for the topic of ``table``. ``value`` None is a tombstone;
    ``all_partitions`` asks the publisher to send it to every partition (truncate)."""

    table: TableId
    key: bytes
    value: bytes | None
    all_partitions: bool = False


@dataclass(slots=True)
class TxnInfo:
    """What every event of one transaction shares (from its Begin message)."""

    commit_lsn: int
    commit_time: str | None
    xid: int | None

    @classmethod
    def from_begin(cls, begin: Begin) -> TxnInfo:
        return cls(begin.final_lsn, pg_time_to_datetime(begin.commit_time).isoformat(), begin.xid)


def _dumps(obj: Any, option: int = 0) -> bytes:
    """orjson.dumps, copied to an exact-size bytes object.

    orjson (3.13) returns bytes that keep its whole output buffer (about 8 KiB for a 1 KiB
    event, measured with tracemalloc). Events wait in the publisher until Kafka acknowledges
    them, so without the copy the connector held ~8x the bytes its in-flight bound counts
    (540 MiB RSS instead of ~100 in ``bench/connector.py``). The copy costs ~1 us.
    """
    return bytes(memoryview(orjson.dumps(obj, option=option)))


def key_bytes(key: dict[str, Any]) -> bytes:
    """Canonical JSON of a primary key: sorted keys, orjson's compact form."""
    return _dumps(key, _SORT)


def _value(
    op: str,
    lsn: int,
    txn: TxnInfo,
    table: TableId,
    key: dict[str, Any],
    row: dict[str, Any] | None,
    unchanged: list[str],
) -> bytes:
    return _dumps(
        {
            "op": op,
            "lsn": lsn,
            "commit_lsn": txn.commit_lsn,
            "commit_time": txn.commit_time,
            "xid": txn.xid,
            "schema": table[0],
            "table": table[1],
            "key": key,
            "row": row,
            "unchanged_toast": unchanged,
        }
    )


def row_record(
    op: str, lsn: int, txn: TxnInfo, table: TableId, key: dict[str, Any], row: dict[str, Any]
) -> Record:
    """A record for a full row (``insert``/``update``/``read``); ``row`` has no TOAST markers."""
    return Record(table, key_bytes(key), _value(op, lsn, txn, table, key, row, []))


def _split_toast(row: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    unchanged = [name for name, value in row.items() if value is UNCHANGED_TOAST]
    if unchanged:
        for name in unchanged:
            del row[name]
    return row, unchanged


@dataclass(slots=True)
class _Rel:
    table: TableId
    columns: tuple[Column, ...]
    key_indexes: tuple[int, ...]


class ChangeEncoder:
    """Turns one replication stream's DML messages into records.

    ``key_columns`` maps a table to its primary-key column names (from the catalog); tables not
    in it fall back to pgoutput's key flags. Not shared between streams (relation ids and
    user-type OIDs are learned per stream).
    """

    def __init__(self, key_columns: dict[TableId, Sequence[str]] | None = None) -> None:
        self.renderer = ValueRenderer()
        self.key_columns: dict[TableId, Sequence[str]] = dict(key_columns or {})
        self._relations: dict[int, _Rel] = {}

    def relation(self, msg: Relation) -> None:
        table = (msg.namespace or "pg_catalog", msg.name)
        wanted = self.key_columns.get(table)
        if wanted:
            names = [c.name for c in msg.columns]
            key_indexes = tuple(names.index(n) for n in wanted if n in names)
        else:
            key_indexes = tuple(i for i, c in enumerate(msg.columns) if c.is_key)
        self._relations[msg.relation_id] = _Rel(table, msg.columns, key_indexes)

    def type(self, msg: Type) -> None:
        self.renderer.register_type(msg)

    def table_of(self, relation_id: int) -> TableId | None:
        rel = self._relations.get(relation_id)
        return rel.table if rel else None

    def _key(self, rel: _Rel, values: Sequence[Any]) -> dict[str, Any]:
        render = self.renderer.render
        return {
            rel.columns[i].name: render(rel.columns[i].type_oid, values[i])  # type: ignore[arg-type]
            for i in rel.key_indexes
        }

    def insert(self, msg: Insert, lsn: int, txn: TxnInfo) -> list[Record]:
        rel = self._relations[msg.relation_id]
        row, unchanged = _split_toast(self.renderer.render_row(rel.columns, msg.new))
        key = {rel.columns[i].name: row[rel.columns[i].name] for i in rel.key_indexes}
        return [Record(rel.table, key_bytes(key), _value("insert", lsn, txn, rel.table, key, row, unchanged))]

    def update(self, msg: Update, lsn: int, txn: TxnInfo) -> list[Record]:
        rel = self._relations[msg.relation_id]
        row = self.renderer.render_row(rel.columns, msg.new)
        key = {}
        for i in rel.key_indexes:
            name = rel.columns[i].name
            value = row[name]
            if value is UNCHANGED_TOAST and msg.old is not None:  # a huge key that did not change
                value = self.renderer.render(rel.columns[i].type_oid, msg.old[i])  # type: ignore[arg-type]
                row[name] = value
            key[name] = value
        row, unchanged = _split_toast(row)
        out: list[Record] = []
        if msg.old is not None:
            old_key = self._key(rel, msg.old)
            if old_key != key:
                old = key_bytes(old_key)
                out.append(Record(rel.table, old, _value("delete", lsn, txn, rel.table, old_key, None, [])))
                out.append(Record(rel.table, old, None))
                out.append(
                    Record(rel.table, key_bytes(key), _value("insert", lsn, txn, rel.table, key, row, unchanged))
                )
                return out
        out.append(Record(rel.table, key_bytes(key), _value("update", lsn, txn, rel.table, key, row, unchanged)))
        return out

    def delete(self, msg: Delete, lsn: int, txn: TxnInfo) -> list[Record]:
        rel = self._relations[msg.relation_id]
        key = self._key(rel, msg.old)
        kb = key_bytes(key)
        return [
            Record(rel.table, kb, _value("delete", lsn, txn, rel.table, key, None, [])),
            Record(rel.table, kb, None),
        ]

    def truncate(self, msg: Truncate, lsn: int, txn: TxnInfo) -> list[Record]:
        out = []
        for relation_id in msg.relation_ids:
            rel = self._relations.get(relation_id)
            if rel is None:
                continue
            value = _dumps(
                {
                    "op": "truncate",
                    "lsn": lsn,
                    "commit_lsn": txn.commit_lsn,
                    "commit_time": txn.commit_time,
                    "xid": txn.xid,
                    "schema": rel.table[0],
                    "table": rel.table[1],
                    "key": None,
                    "row": None,
                    "unchanged_toast": [],
                }
            )
            out.append(Record(rel.table, TRUNCATE_KEY, value, all_partitions=True))
        return out
