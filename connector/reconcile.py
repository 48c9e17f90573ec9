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
* A table's changes are streamed from its ``stream_from_lsn`` on (earlier ones are in its
  snapshot); only tables with a recorded state are streamed.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from enum import Enum

from connector.events import TableId
from connector.state import TableState
from pgai_orm.catalog import VectorizerRecord
from pgai_orm.names import topic_name

__all__ = [
    "Desired",
    "SlotAction",
    "SourceTable",
    "StreamPlan",
    "desired_tables",
    "forgotten",
    "lost_topics",
    "needing_snapshot",
    "resumes_snapshot",
    "slot_action",
    "stream_plan",
]


@dataclass(slots=True)
class SourceTable:
    """A source table the catalog wants streamed, with every publication that covers it."""

    schema: str
    table: str
    key_columns: list[str]
    topic: str
    publications: set[str] = field(default_factory=set)

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
    return Desired(tables, missing)


class SlotAction(Enum):
    IDLE = "idle"  # no vectorizer and no slot: nothing to do
    DROP = "drop"  # no vectorizer left: stop streaming and drop the slot
    CREATE = "create"  # vectorizers but no slot: create it, its snapshot covers every table
    STREAM = "stream"  # the slot exists: snapshot what needs it, stream the rest


def slot_action(has_tables: bool, slot_exists: bool, streaming: bool) -> SlotAction:
    if not has_tables:
        return SlotAction.DROP if slot_exists or streaming else SlotAction.IDLE
    return SlotAction.STREAM if slot_exists else SlotAction.CREATE


def forgotten(tables: Mapping[TableId, SourceTable], states: Mapping[TableId, TableState]) -> set[TableId]:
    """Tables with a recorded state that no vectorizer wants any more."""
    return set(states) - set(tables)


def needing_snapshot(tables: Mapping[TableId, SourceTable],
                     states: Mapping[TableId, TableState]) -> list[SourceTable]:
    """Tables never snapshotted (new, or forgotten after a broker loss) or snapshotted halfway."""
    return [t for tid, t in tables.items()
            if tid not in states or states[tid].status == "snapshotting"]


def resumes_snapshot(previous: TableState | None, table: SourceTable, topic_id: str) -> bool:
    """Whether a snapshot goes on after its recorded keyset position: only into the same topic
    that received its first part."""
    return (previous is not None and previous.status == "snapshotting"
            and previous.topic_id == topic_id and previous.topic == table.topic)


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
