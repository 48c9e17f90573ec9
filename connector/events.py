"""Decoded pgoutput changes -> Kafka records (key bytes, value bytes) per the event contract.

The contract is :mod:`pgai_orm.events` (described in ``docs/architecture.md``, "Events on the
topics"); this module only decides which event each pgoutput message becomes. It holds no I/O:
a :class:`ChangeEncoder` learns relations and types from the stream and turns
Insert/Update/Delete/Truncate messages into :class:`Record` s and
:class:`~pgai_orm.events.Truncate` s. It renders with :mod:`connector.values`, as the snapshot
does, so a row's key bytes are identical on both paths; the key values come from the key
renderer there (canonical by value: ``1.5`` and ``1.50`` are one key).

Decisions made here, and why:

* The key is the primary key as named by the catalog (``source_pk``), not pgoutput's key flags:
  under ``REPLICA IDENTITY FULL`` every column is flagged, which would make the whole row the key.
  The key keeps the catalog's names (the store's columns) when a key column is renamed: the
  Relation message then names the column by its new name, which the catalog finds by attnum
  (``source_names``), so keys stay addressable instead of coming out empty.
* Partitions: publications publish via the partition root, so changes of every partition
  (attached later too) arrive under the partitioned table's relation; a Relation message of a
  partition itself is only learned.
* A primary-key change (an Update carrying the old key, ``'K'``, or under FULL an old row whose
  key differs) becomes ``delete`` of the old key, its tombstone, and ``insert`` of the new one:
  the old key's partition and the new key's partition each see a self-contained history.
  "Differs" compares the canonical key bytes: ``SET id = 1.50 WHERE id = 1.5`` rewrites the
  key's text, not the key, so it stays an ``update`` of one key (a delete+insert of one key
  would be applied in either order on one partition only by luck).
* The key renderer of each key column is chosen once, when the Relation message arrives;
  types the builtin table does not know (domains, arrays of them, citext) are described from
  ``pg_type`` through the ``describe`` callback (the session's connection), as the snapshot
  reader does.
* Unchanged TOAST columns are left out of ``row`` and listed in ``unchanged_toast``; sending
  ``null`` or ``""`` would erase text downstream.
* No event object per change: this is the hot path, so the value bytes come straight from
  :func:`~pgai_orm.events.encode_row_change`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
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
from connector.values import Renderer, TypeInfo, ValueRenderer
from pgai_orm.errors import InvariantError, VectorizerError
from pgai_orm.events import Transaction, Truncate, canonical_key, encode_row_change

__all__ = [
    "ChangeEncoder",
    "KeyColumnMissingError",
    "KeyNotSentError",
    "Record",
    "SourceNames",
    "TableId",
    "transaction_of",
]

TableId = tuple[str, str]  # (schema, table)
#: ``(schema, table) -> [(store name, current source name or None), ...]`` of its key columns
#: (:func:`pgai_orm.catalog.vectorizers.source_key_names` on a connection)
SourceNames = Callable[[str, str], Sequence[tuple[str, str | None]]]


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


class _KeyColumn(NamedTuple):
    position: int  # in the relation's columns and tuples
    name: str
    render: Renderer  # text -> canonical key value
    reuse_row: bool  # the row's rendered value already is the key value


@dataclass(slots=True)
class _Rel:
    table: TableId
    columns: tuple[Column, ...]
    key: tuple[_KeyColumn, ...]
    key_names: tuple[str, ...] | None  # set when every key value is the row's value


class KeyColumnMissingError(VectorizerError, LookupError):
    """A key column the catalog names is not in the Relation message, and no rename explains it."""


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
    in it fall back to pgoutput's key flags. ``describe`` is
    :func:`connector.values.describe_types` on a connection to the database: without it, keys
    of non-builtin types are their text. ``source`` is the catalog instance id of the database
    (``pgai_orm.catalog.vectorizers.instance_id``), written into every event. Not shared between streams (relation ids and
    user-type OIDs are learned per stream).
    """

    def __init__(self, key_columns: dict[TableId, Sequence[str]] | None = None,
                 describe: Callable[[list[int]], Mapping[int, TypeInfo]] | None = None,
                 source_names: SourceNames | None = None, source: str | None = None) -> None:
        self.renderer = ValueRenderer()
        self.key_columns: dict[TableId, Sequence[str]] = dict(key_columns or {})
        self._describe = describe
        self._source_names = source_names
        self.source = source  # the catalog instance id, written into every event
        self._relations: dict[int, _Rel] = {}

    def relation(self, msg: Relation) -> None:
        table = (msg.namespace or "pg_catalog", msg.name)
        wanted = self.key_columns.get(table)
        if wanted:
            fields = self._key_fields(table, wanted, msg.columns)
        else:
            fields = [(i, c.name) for i, c in enumerate(msg.columns) if c.is_key]
        key_indexes = tuple(i for i, _ in fields)
        renderer = self.renderer
        renderer.learn_key_types((msg.columns[i].type_oid for i in key_indexes), self._describe)
        key = []
        for i, name in fields:
            column = msg.columns[i]
            render = renderer.key_renderer_for(column.type_oid)
            key.append(_KeyColumn(i, name, render, name == column.name
                                  and render is renderer.renderer_for(column.type_oid)))
        key_names = tuple(c.name for c in key) if all(c.reuse_row for c in key) else None
        self._relations[msg.relation_id] = _Rel(table, msg.columns, tuple(key), key_names)

    def _key_fields(self, table: TableId, wanted: Sequence[str],
                    columns: Sequence[Column]) -> list[tuple[int, str]]:
        """``(position, name in the key)`` of each key column the catalog names. A name the
        Relation message lacks is a renamed key column: ``source_names`` (the catalog, by
        attnum) says what it is called now. The key keeps the catalog's name, which is the
        store's, so the rows stay addressable; never a key without the column."""
        names = [c.name for c in columns]
        if all(n in names for n in wanted):
            return [(names.index(n), n) for n in wanted]
        current = dict(self._source_names(*table)) if self._source_names is not None else {}
        fields = []
        for name in wanted:
            now = name if name in names else current.get(name)
            if now is None or now not in names:
                raise KeyColumnMissingError(
                    f"{table[0]}.{table[1]}: key column {name!r} is not among the streamed columns"
                    f" {names} and the catalog knows no current name for it (now {now!r}); the"
                    " connector stops rather than publish events without their key: rename the"
                    f" column back to {name!r}, or drop and create the vectorizer again")
            fields.append((names.index(now), name))
        return fields

    def type(self, msg: Type) -> None:
        self.renderer.register_type(msg)

    def table_of(self, relation_id: int) -> TableId | None:
        rel = self._relations.get(relation_id)
        return rel.table if rel else None

    def _key(self, rel: _Rel, values: Sequence[Value]) -> dict[str, Any]:
        key = {}
        for column in rel.key:
            text = _key_text(rel, column.position, values[column.position])
            key[column.name] = None if text is None else column.render(text)
        return key

    def _new_key(self, rel: _Rel, row: dict[str, Any], new: Sequence[Value],
                 old: Sequence[Value] | None) -> dict[str, Any]:
        """The key of a new tuple whose ``row`` is rendered; a key column sent as unchanged
        TOAST (a huge key that did not change) is taken from the old tuple, into ``row`` too."""
        key = {}
        for column in rel.key:
            position = column.position
            text = new[position]
            if text is UNCHANGED_TOAST:  # without an old tuple _key_text raises KeyNotSentError
                text = _key_text(rel, position, old[position] if old is not None else text)
                row[rel.columns[position].name] = self.renderer.render(rel.columns[position].type_oid, text)
            elif column.reuse_row:
                key[column.name] = row[column.name]
                continue
            text = _key_text(rel, position, text)
            key[column.name] = None if text is None else column.render(text)
        return key

    def insert(self, msg: Insert, lsn: int, txn: Transaction) -> list[Record]:
        rel = self._relations[msg.relation_id]
        row = self.renderer.render_row(rel.columns, msg.new)
        names = rel.key_names
        key = ({name: row[name] for name in names} if names is not None
               else self._new_key(rel, row, msg.new, None))
        row, unchanged = _split_toast(row)
        schema, table = rel.table
        return [Record(canonical_key(key),
                       encode_row_change("insert", lsn, txn, schema, table, key, row, unchanged,
                                         self.source))]

    def update(self, msg: Update, lsn: int, txn: Transaction) -> list[Record]:
        rel = self._relations[msg.relation_id]
        row = self.renderer.render_row(rel.columns, msg.new)
        key = self._new_key(rel, row, msg.new, msg.old)
        row, unchanged = _split_toast(row)
        schema, table = rel.table
        key_bytes = canonical_key(key)
        if msg.old is not None:
            old_key = self._key(rel, msg.old)
            old = canonical_key(old_key)
            if old != key_bytes:  # equal by value means equal bytes: compare those
                return [
                    Record(old, encode_row_change("delete", lsn, txn, schema, table, old_key, None,
                                                  source=self.source)),
                    Record(old, None),
                    Record(key_bytes, encode_row_change("insert", lsn, txn, schema, table, key, row,
                                                        unchanged, self.source)),
                ]
        return [Record(key_bytes,
                       encode_row_change("update", lsn, txn, schema, table, key, row, unchanged,
                                         self.source))]

    def delete(self, msg: Delete, lsn: int, txn: Transaction) -> list[Record]:
        rel = self._relations[msg.relation_id]
        key = self._key(rel, msg.old)
        key_bytes = canonical_key(key)
        schema, table = rel.table
        return [
            Record(key_bytes, encode_row_change("delete", lsn, txn, schema, table, key, None,
                                                source=self.source)),
            Record(key_bytes, None),
        ]

    def truncate(self, msg: TruncateMessage, lsn: int,
                 txn: Transaction) -> list[tuple[TableId, Truncate]]:
        """One truncate per known table of the message (the publisher fans each out)."""
        out = []
        for relation_id in msg.relation_ids:
            rel = self._relations.get(relation_id)
            if rel is not None:
                out.append((rel.table, Truncate(lsn, txn, *rel.table, self.source)))
        return out
