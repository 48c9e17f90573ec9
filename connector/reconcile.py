"""What the catalog asks of the connector, decided against what the connector recorded.

Every catalog poll compares three things: the vectorizers (:func:`pgai_orm.catalog.load_vectorizers`),
the connector's state per source table (:mod:`connector.state`) and whether the slot exists.
The decisions are pure functions of those, here, so they are testable without a database; the
session (:mod:`connector.session`) reads the inputs and carries the decisions out.

* Several vectorizers may share a source table: the table is read and published once, and its
  changes are streamed while any of their publications is.
* A vectorizer whose source table was dropped (``DROP TABLE ... CASCADE``) has nothing to read;
  it is left out (the workers record the error) and the other tables go on.
* A table with no recorded state, or whose snapshot did not finish, is snapshotted; a table
  recorded but no longer wanted is forgotten.
* **Incarnations.** A table recorded as streaming is snapshotted again when it is a new
  incarnation: its OID changed (dropped and created again), or none of the vectorizers now on
  it is one the connector streamed it for (every vectorizer of the table was dropped and
  created again, possibly in one transaction, so the old publication's walsender skipped the
  changes in between and nobody streamed them). A vectorizer added beside one that keeps
  streaming the table needs no snapshot: the topic holds the table's whole history.
* **The slot.** Missing while tables are recorded (dropped by hand, or with the last
  vectorizer while the connector was stopped) or invalidated by the server
  (``max_slot_wal_keep_size``): a new slot is created and every table is snapshotted again.
* Every snapshot, the first included, ends with a truncate below its rows
  (:mod:`connector.snapshot`), so every snapshot is a full resync: ``snapshot_reason`` only
  says why it ran (status, metrics).
* A table's changes are streamed from its ``stream_from_lsn`` on (earlier ones are in its
  snapshot); only tables with a recorded state are streamed.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Set
from dataclasses import dataclass, field
from enum import Enum

from connector.events import TableId
from connector.state import TableState
from pgai_orm.catalog import VectorizerRecord
from pgai_orm.names import topic_name

__all__ = [
    "BROKER_LOST",
    "FIRST",
    "REASONS",
    "RESYNC_REASONS",
    "SLOT_DROPPED",
    "SLOT_INVALIDATED",
    "TABLE_RECREATED",
    "VECTORIZER_RECREATED",
    "Desired",
    "SlotAction",
    "SourceTable",
    "StreamPlan",
    "desired_tables",
    "forgotten",
    "incarnation_change",
    "incarnations_to_record",
    "lost_topics",
    "needing_snapshot",
    "resumes_snapshot",
    "slot_action",
    "slot_lost",
    "snapshot_reason",
    "stream_plan",
]

#: Why a table is snapshotted (``connector_tables.snapshot_reason``, the ``reason`` label of
#: ``vectorizer_connector_snapshots_total``). Every snapshot is a full resync; all but the
#: first mean the stores may hold rows the source no longer has, which the snapshot removes.
FIRST = "first"  # a table no snapshot of this connector covered (new vectorizer, or forgotten)
SLOT_DROPPED = "slot_dropped"  # the slot was gone while tables were recorded
SLOT_INVALIDATED = "slot_invalidated"  # the server invalidated the slot (WAL removed, ...)
BROKER_LOST = "broker_lost"  # the broker lost (or re-created) the table's topic
VECTORIZER_RECREATED = "vectorizer_recreated"  # no vectorizer the table was streamed for is left
TABLE_RECREATED = "table_recreated"  # the source table's OID changed
REASONS = (FIRST, SLOT_DROPPED, SLOT_INVALIDATED, BROKER_LOST, VECTORIZER_RECREATED, TABLE_RECREATED)
RESYNC_REASONS = frozenset(REASONS) - {FIRST}


@dataclass(slots=True)
class SourceTable:
    """A source table the catalog wants streamed, with every publication that covers it."""

    schema: str
    table: str
    key_columns: list[str]
    topic: str
    publications: set[str] = field(default_factory=set)
    vectorizer_ids: set[int] = field(default_factory=set)

    @property
    def id(self) -> TableId:
        return (self.schema, self.table)


@dataclass(frozen=True, slots=True)
class Desired:
    """The catalog's wish: tables to stream, and per missing source table one of its
    vectorizers (to name in the log)."""

    tables: dict[TableId, SourceTable]
    missing: dict[TableId, VectorizerRecord]


def desired_tables(vectorizers: Iterable[VectorizerRecord], topic_prefix: str,
                   database: str) -> Desired:
    tables: dict[TableId, SourceTable] = {}
    missing: dict[TableId, VectorizerRecord] = {}
    for v in vectorizers:
        tid = (v.source_schema, v.source_table)
        if not v.source_exists:
            missing.setdefault(tid, v)
            continue
        table = tables.get(tid)
        if table is None:
            table = tables[tid] = SourceTable(*tid, [c.attname for c in v.source_pk],
                                              topic_name(topic_prefix, database, *tid))
        table.publications.add(v.publication_name)
        table.vectorizer_ids.add(v.id)
    return Desired(tables, missing)


class SlotAction(Enum):
    IDLE = "idle"  # no vectorizer and no slot: nothing to do
    DROP = "drop"  # no vectorizer left: stop streaming and drop the slot
    CREATE = "create"  # vectorizers but no slot: create it, its snapshot covers every table
    RECREATE = "recreate"  # the slot was invalidated: drop it, then as CREATE
    STREAM = "stream"  # the slot exists: snapshot what needs it, stream the rest


def slot_action(has_tables: bool, slot_exists: bool, streaming: bool, *,
                invalidated: bool = False) -> SlotAction:
    if not has_tables:
        return SlotAction.DROP if slot_exists or streaming else SlotAction.IDLE
    if slot_exists and invalidated:
        return SlotAction.RECREATE
    return SlotAction.STREAM if slot_exists else SlotAction.CREATE


def forgotten(tables: Mapping[TableId, SourceTable], states: Mapping[TableId, TableState]) -> set[TableId]:
    """Tables with a recorded state that no vectorizer wants any more."""
    return set(states) - set(tables)


def incarnation_change(table: SourceTable, state: TableState, oid: int | None) -> str | None:
    """:data:`TABLE_RECREATED` or :data:`VECTORIZER_RECREATED` when ``table`` (whose OID is now
    ``oid``) is not the incarnation ``state`` recorded; None when it is, or when the record
    predates incarnations (NULL columns: unknown, never a reason)."""
    if state.source_oid is not None and oid is not None and oid != state.source_oid:
        return TABLE_RECREATED
    if state.vectorizer_ids and not (table.vectorizer_ids & state.vectorizer_ids):
        return VECTORIZER_RECREATED
    return None


def slot_lost(tables: Mapping[TableId, SourceTable], states: Mapping[TableId, TableState],
              oids: Mapping[TableId, int | None]) -> bool:
    """Whether a missing slot was *lost*: it streamed a table that is still wanted in the same
    incarnation. Otherwise it went with the last vectorizer (``drop_vectorizer`` drops an
    inactive slot) and the new one is simply a first slot."""
    return any(tid in tables and incarnation_change(tables[tid], st, oids.get(tid)) is None
               for tid, st in states.items())


def snapshot_reason(table: SourceTable, state: TableState | None, oid: int | None, *,
                    slot_gone: str | None = None, topic_lost: bool = False) -> str | None:
    """Why ``table`` must be snapshotted now, or None when it just streams on.

    ``slot_gone`` (:data:`SLOT_DROPPED` or :data:`SLOT_INVALIDATED`): the slot is being created
    again, so every table is snapshotted. ``topic_lost``: the broker lost the table's topic (its
    state was forgotten then). A snapshot that did not finish goes on with its first reason.
    """
    change = None if state is None else incarnation_change(table, state, oid)
    if change is not None:
        return change
    if slot_gone is not None:
        return slot_gone if state is not None else (BROKER_LOST if topic_lost else FIRST)
    if state is None:
        return BROKER_LOST if topic_lost else FIRST
    if state.status == "snapshotting":
        return state.snapshot_reason or FIRST
    return None


def needing_snapshot(tables: Mapping[TableId, SourceTable], states: Mapping[TableId, TableState],
                     oids: Mapping[TableId, int | None] | None = None,
                     topics_lost: Set[TableId] = frozenset()) -> dict[TableId, str]:
    """Tables to snapshot while the slot exists, each with its reason: never snapshotted (new,
    or forgotten after a broker loss), snapshotted halfway, or a new incarnation."""
    oids = oids or {}
    out: dict[TableId, str] = {}
    for tid, table in tables.items():
        reason = snapshot_reason(table, states.get(tid), oids.get(tid), topic_lost=tid in topics_lost)
        if reason is not None:
            out[tid] = reason
    return out


def incarnations_to_record(tables: Mapping[TableId, SourceTable],
                           states: Mapping[TableId, TableState],
                           oids: Mapping[TableId, int | None]) -> dict[TableId, int | None]:
    """Streaming tables in the same incarnation whose record is behind: a vectorizer was added
    or dropped beside one that kept streaming the table, or the row predates the columns. Their
    new vectorizer set (and OID) is recorded, so a later re-creation is measured against it."""
    out: dict[TableId, int | None] = {}
    for tid, st in states.items():
        table = tables.get(tid)
        if table is None or st.status != "streaming" or incarnation_change(table, st, oids.get(tid)):
            continue
        if st.vectorizer_ids != frozenset(table.vectorizer_ids) or (
                st.source_oid is None and oids.get(tid) is not None):
            out[tid] = oids.get(tid)
    return out


def resumes_snapshot(previous: TableState | None, table: SourceTable, topic_id: str,
                     oid: int | None = None) -> bool:
    """Whether a snapshot goes on after its recorded keyset position: only into the same topic
    that received its first part, and only for the same incarnation of the table."""
    return (previous is not None and previous.status == "snapshotting"
            and previous.topic_id == topic_id and previous.topic == table.topic
            and incarnation_change(table, previous, oid) is None)


@dataclass(frozen=True, slots=True)
class StreamPlan:
    floors: dict[TableId, int]  # per streamed table: publish transactions committing from here
    publications: frozenset[str]


def stream_plan(tables: Mapping[TableId, SourceTable],
                states: Mapping[TableId, TableState]) -> StreamPlan:
    floors = {tid: st.stream_from_lsn for tid, st in states.items() if tid in tables}
    return StreamPlan(floors, frozenset(p for tid in floors for p in tables[tid].publications))


def lost_topics(states: Mapping[TableId, TableState],
                topic_ids: Mapping[str, str | None]) -> set[TableId]:
    """Tables whose topic the broker no longer has, or has under another id (re-created)."""
    return {tid for tid, st in states.items() if topic_ids.get(st.topic) != st.topic_id}
