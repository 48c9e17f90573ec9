"""Decoded pgoutput changes -> Kafka records (key bytes, value bytes) per the event contract.

The contract is :mod:`pgai_orm.events` (described in ``docs/architecture.md``, "Events on the
topics"); this module only decides which event each pgoutput message becomes. It holds no I/O:
a :class:`ChangeEncoder` learns relations and types from the stream and turns
Insert/Update/Delete/Truncate messages into :class:`Record` s and
:class:`~pgai_orm.events.Truncate` s. It renders with :mod:`connector.values`, as the snapshot
does, so a row's key bytes are identical on both paths.

Decisions made here, and why:

* The key is the primary key as named by the catalog (``source_pk``), not pgoutput's key flags:
  under ``REPLICA IDENTITY FULL`` every column is flagged, which would make the whole row the key.
* A primary-key change (an Update carrying the old key, ``'K'``, or under FULL an old row whose
  key differs) becomes ``delete`` of the old key, its tombstone, and ``insert`` of the new one:
  the old key's partition and the new key's partition each see a self-contained history.
* Unchanged TOAST columns are left out of ``row`` and listed in ``unchanged_toast``; sending
  ``null`` or ``""`` would erase text downstream.
* No event object per change: this is the hot path, so the value bytes come straight from
  :func:`~pgai_orm.events.encode_row_change`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

from connector.pgoutput import (
    UNCHANGED_TOAST,
    Begin,
    Column,
    Delete,
    Insert,
    Relation,
    Type,
    Update,
    Value,
    pg_time_to_datetime,
)
from connector.pgoutput import Truncate as TruncateMessage
from connector.values import ValueRenderer
from pgai_orm.errors import InvariantError
from pgai_orm.events import Transaction, Truncate, canonical_key, encode_row_change

__all__ = ["ChangeEncoder", "KeyNotSentError", "Record", "TableId", "transaction_of"]

TableId = tuple[str, str]  # (schema, table)


class Record(NamedTuple):
    """One Kafka record for the topic of the change's table; ``value`` None is a tombstone."""

    key: bytes
    value: bytes | None


def transaction_of(begin: Begin) -> Transaction:
    """What every event of the transaction that ``begin`` opens shares."""
    return Transaction(begin.final_lsn, pg_time_to_datetime(begin.commit_time).isoformat(), begin.xid)


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


class KeyNotSentError(InvariantError):
    """An old tuple lacks the text of a key column (unchanged TOAST or binary): the replica
    identity does not cover the primary key the catalog names."""


def _key_text(rel: _Rel, index: int, value: Value) -> str | None:
    if value is None or isinstance(value, str):
        return value
    raise KeyNotSentError(f"{rel.table[0]}.{rel.table[1]}: key column {rel.columns[index].name!r}"
                          f" was sent as {value!r}, not as text")


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

    def _key(self, rel: _Rel, values: Sequence[Value]) -> dict[str, Any]:
        render = self.renderer.render
        columns = rel.columns
        return {columns[i].name: render(columns[i].type_oid, _key_text(rel, i, values[i]))
                for i in rel.key_indexes}

    def insert(self, msg: Insert, lsn: int, txn: Transaction) -> list[Record]:
        rel = self._relations[msg.relation_id]
        row, unchanged = _split_toast(self.renderer.render_row(rel.columns, msg.new))
        key = {rel.columns[i].name: row[rel.columns[i].name] for i in rel.key_indexes}
        schema, table = rel.table
        return [Record(canonical_key(key),
                       encode_row_change("insert", lsn, txn, schema, table, key, row, unchanged))]

    def update(self, msg: Update, lsn: int, txn: Transaction) -> list[Record]:
        rel = self._relations[msg.relation_id]
        row = self.renderer.render_row(rel.columns, msg.new)
        key = {}
        for i in rel.key_indexes:
            name = rel.columns[i].name
            value = row[name]
            if value is UNCHANGED_TOAST and msg.old is not None:  # a huge key that did not change
                value = self.renderer.render(rel.columns[i].type_oid, _key_text(rel, i, msg.old[i]))
                row[name] = value
            key[name] = value
        row, unchanged = _split_toast(row)
        schema, table = rel.table
        if msg.old is not None:
            old_key = self._key(rel, msg.old)
            if old_key != key:
                old = canonical_key(old_key)
                return [
                    Record(old, encode_row_change("delete", lsn, txn, schema, table, old_key, None)),
                    Record(old, None),
                    Record(canonical_key(key),
                           encode_row_change("insert", lsn, txn, schema, table, key, row, unchanged)),
                ]
        return [Record(canonical_key(key),
                       encode_row_change("update", lsn, txn, schema, table, key, row, unchanged))]

    def delete(self, msg: Delete, lsn: int, txn: Transaction) -> list[Record]:
        rel = self._relations[msg.relation_id]
        key = self._key(rel, msg.old)
        key_bytes = canonical_key(key)
        schema, table = rel.table
        return [
            Record(key_bytes, encode_row_change("delete", lsn, txn, schema, table, key, None)),
            Record(key_bytes, None),
        ]

    def truncate(self, msg: TruncateMessage, lsn: int,
                 txn: Transaction) -> list[tuple[TableId, Truncate]]:
        """One truncate per known table of the message (the publisher fans each out)."""
        out = []
        for relation_id in msg.relation_ids:
            rel = self._relations.get(relation_id)
            if rel is not None:
                out.append((rel.table, Truncate(lsn, txn, *rel.table)))
        return out
