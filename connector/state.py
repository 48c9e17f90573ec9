"""The connector's own state, kept in the catalog database beside the vectorizers.

Why in Postgres and not in a file or in Kafka: the state must survive the connector's process
and the (possibly memory-only) broker, and it must change together with what the slot knows.

``vectorizer.connector_state``: one row per slot: the broker cluster id last seen and the last
LSN the connector confirmed (for ``status()``; the slot itself is the truth for resuming).

``vectorizer.connector_tables``: one row per (slot, source table):

* ``status``: ``snapshotting`` until every row of the initial snapshot is acknowledged by
  Kafka, then ``streaming``.
* ``stream_from_lsn``: the main stream publishes this table's changes only from transactions
  whose commit LSN is at or above it (the snapshot holds everything committed before; see
  :mod:`connector.snapshot`).
* ``snapshot_lsn``: the ``lsn`` that the current snapshot attempt's ``read`` events carry.
* ``snapshot_after``: the keyset position (primary-key values as text, in key order) of the last
  row whose event Kafka acknowledged; an interrupted snapshot resumes after it.
* ``topic``, ``topic_id``: the topic and the id the broker gave it; a different or missing id
  means the broker lost it and the table is snapshotted again.
* ``source_oid``, ``vectorizer_ids``: the table's *incarnation*: the source table's OID and the
  ids of the vectorizers whose publications stream it. A different OID (the table was dropped
  and created again) or a set sharing no id with the recorded one (every vectorizer of the table
  was dropped and created again, e.g. in one transaction) is a new incarnation: the table is
  snapshotted again (:func:`connector.reconcile.snapshot_reason`). NULL in rows written before
  these columns existed: unknown, recorded on the next poll, never a reason to resync.
* ``snapshot_reason``: why the latest snapshot ran (:data:`connector.reconcile.REASONS`).
* ``truncate_lsn``: the truncate that closes the snapshot (``read_lsn - 1`` of its first
  attempt, kept when it resumes): sent once every row is acknowledged, it removes from the
  stores every row applied below it that the snapshot did not read again.

``connector_state`` also keeps the slot's last re-creation (``slot_recreated_reason``,
``slot_recreated_at``, ``slot_recreations``) for ``vectorizer status``.

Their DDL is part of the catalog install (:func:`pgai_orm.catalog.ensure_catalog`); this module
is the one writer of their rows.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson
import psycopg

from pgai_orm.lsn import format_lsn, parse_lsn

__all__ = ["SlotRecord", "StateStore", "TableState", "recorded_slots", "state_exists"]


@dataclass(slots=True)
class TableState:
    schema: str
    table: str
    topic: str
    topic_id: str | None
    status: str
    stream_from_lsn: int
    snapshot_lsn: int | None
    snapshot_after: list[str | None] | None
    rows_done: int
    rows_total: int | None
    source_oid: int | None = None
    vectorizer_ids: frozenset[int] | None = None
    snapshot_reason: str | None = None
    truncate_lsn: int | None = None

    @property
    def key(self) -> tuple[str, str]:
        return (self.schema, self.table)


@dataclass(frozen=True, slots=True)
class SlotRecord:
    """What ``connector_state`` keeps of a slot."""

    slot_name: str
    confirmed_lsn: str | None
    recreated_reason: str | None
    recreated_at: Any  # datetime, as psycopg returns it
    recreations: int


def state_exists(conn: psycopg.Connection[Any]) -> bool:
    """Whether the database has the state tables (``status()`` reads, it never installs)."""
    row = conn.execute("SELECT to_regclass('vectorizer.connector_tables') IS NOT NULL").fetchone()
    return bool(row and row[0])


def _lsn(value: Any) -> int | None:
    return None if value is None else parse_lsn(str(value))


def recorded_slots(conn: psycopg.Connection[Any]) -> list[SlotRecord]:
    """Every slot ``connector_state`` knows in this database (one may be gone from the server)."""
    if not state_exists(conn):
        return []
    rows = conn.execute(
        "SELECT slot_name, confirmed_lsn::text, slot_recreated_reason, slot_recreated_at,"
        " slot_recreations FROM vectorizer.connector_state ORDER BY slot_name").fetchall()
    return [SlotRecord(r[0], r[1], r[2], r[3], int(r[4] or 0)) for r in rows]


class StateStore:
    """Reads and writes the two state tables on an autocommit connection of its own."""

    def __init__(self, conn: psycopg.Connection[Any], slot_name: str) -> None:
        self._conn = conn
        self.slot_name = slot_name

    def tables(self) -> dict[tuple[str, str], TableState]:
        rows = self._conn.execute(
            "SELECT source_schema, source_table, topic, topic_id, status, stream_from_lsn::text,"
            " snapshot_lsn::text, snapshot_after, rows_done, rows_total, source_oid::bigint,"
            " vectorizer_ids, snapshot_reason, truncate_lsn::text"
            " FROM vectorizer.connector_tables WHERE slot_name = %s",
            (self.slot_name,),
        ).fetchall()
        out = {}
        for r in rows:
            state = TableState(
                r[0], r[1], r[2], r[3], r[4], parse_lsn(r[5]), _lsn(r[6]), r[7], r[8], r[9],
                None if r[10] is None else int(r[10]),
                None if r[11] is None else frozenset(r[11]), r[12], _lsn(r[13]),
            )
            out[state.key] = state
        return out

    def slot(self) -> SlotRecord | None:
        for record in recorded_slots(self._conn):
            if record.slot_name == self.slot_name:
                return record
        return None

    def start_snapshot(
        self, schema: str, table: str, topic: str, topic_id: str, stream_from_lsn: int,
        snapshot_lsn: int, rows_total: int | None, *, resume: bool = False,
        source_oid: int | None = None, vectorizer_ids: frozenset[int] | None = None,
        reason: str | None = None, truncate_lsn: int | None = None,
    ) -> None:
        """Record a snapshot attempt. A resumed one (``resume``) keeps its keyset position, its
        ``stream_from_lsn`` (the first attempt's point, from which changes were published), its
        reason and its ``truncate_lsn`` (below the first attempt's rows); the others given here
        are the new attempt's."""
        oid = None if source_oid is None else str(source_oid)
        ids = None if vectorizer_ids is None else sorted(vectorizer_ids)
        if resume:
            self._conn.execute(
                "UPDATE vectorizer.connector_tables SET snapshot_lsn = %s::pg_lsn,"
                " rows_total = coalesce(%s, rows_total), source_oid = coalesce(%s::oid, source_oid),"
                " vectorizer_ids = coalesce(%s::int[], vectorizer_ids), updated_at = now()"
                " WHERE slot_name = %s AND source_schema = %s AND source_table = %s",
                (format_lsn(snapshot_lsn), rows_total, oid, ids, self.slot_name, schema, table),
            )
            return
        self._conn.execute(
            "INSERT INTO vectorizer.connector_tables (slot_name, source_schema, source_table,"
            " topic, topic_id, status, stream_from_lsn, snapshot_lsn, rows_total, source_oid,"
            " vectorizer_ids, snapshot_reason, truncate_lsn)"
            " VALUES (%s, %s, %s, %s, %s, 'snapshotting', %s::pg_lsn, %s::pg_lsn, %s, %s::oid,"
            " %s::int[], %s, %s::pg_lsn)"
            " ON CONFLICT (slot_name, source_schema, source_table) DO UPDATE SET"
            " topic = EXCLUDED.topic, topic_id = EXCLUDED.topic_id, status = 'snapshotting',"
            " stream_from_lsn = EXCLUDED.stream_from_lsn, snapshot_lsn = EXCLUDED.snapshot_lsn,"
            " snapshot_after = NULL, rows_done = 0, rows_total = EXCLUDED.rows_total,"
            " source_oid = EXCLUDED.source_oid, vectorizer_ids = EXCLUDED.vectorizer_ids,"
            " snapshot_reason = EXCLUDED.snapshot_reason, truncate_lsn = EXCLUDED.truncate_lsn,"
            " updated_at = now()",
            (self.slot_name, schema, table, topic, topic_id, format_lsn(stream_from_lsn),
             format_lsn(snapshot_lsn), rows_total, oid, ids, reason,
             None if truncate_lsn is None else format_lsn(truncate_lsn)),
        )

    def record_incarnation(self, schema: str, table: str, source_oid: int | None,
                           vectorizer_ids: frozenset[int]) -> None:
        """The table goes on in the same incarnation with these vectorizers (one was added or
        dropped beside a vectorizer that kept streaming it), or its row predates the columns."""
        self._conn.execute(
            "UPDATE vectorizer.connector_tables SET source_oid = coalesce(%s::oid, source_oid),"
            " vectorizer_ids = %s::int[], updated_at = now()"
            " WHERE slot_name = %s AND source_schema = %s AND source_table = %s",
            (None if source_oid is None else str(source_oid), sorted(vectorizer_ids),
             self.slot_name, schema, table),
        )

    def record_progress(self, schema: str, table: str, after: list[str | None], rows_done: int) -> None:
        self._conn.execute(
            "UPDATE vectorizer.connector_tables SET snapshot_after = %s::jsonb, rows_done = %s,"
            " updated_at = now() WHERE slot_name = %s AND source_schema = %s AND source_table = %s",
            (orjson.dumps(after).decode(), rows_done, self.slot_name, schema, table),
        )

    def record_total(self, schema: str, table: str, rows_total: int) -> None:
        """The planner's estimate of the table's rows, for progress (``vectorizer status``)."""
        self._conn.execute(
            "UPDATE vectorizer.connector_tables SET rows_total = %s, updated_at = now()"
            " WHERE slot_name = %s AND source_schema = %s AND source_table = %s",
            (rows_total, self.slot_name, schema, table),
        )

    def finish_snapshot(self, schema: str, table: str) -> None:
        """The table streams now; its total becomes exact: the rows the snapshot read."""
        self._conn.execute(
            "UPDATE vectorizer.connector_tables SET status = 'streaming', snapshot_after = NULL,"
            " rows_total = rows_done,"
            " updated_at = now() WHERE slot_name = %s AND source_schema = %s AND source_table = %s",
            (self.slot_name, schema, table),
        )

    def forget_table(self, schema: str, table: str) -> None:
        self._conn.execute(
            "DELETE FROM vectorizer.connector_tables"
            " WHERE slot_name = %s AND source_schema = %s AND source_table = %s",
            (self.slot_name, schema, table),
        )

    def forget_all(self) -> None:
        self._conn.execute(
            "DELETE FROM vectorizer.connector_tables WHERE slot_name = %s", (self.slot_name,)
        )

    def record_slot_recreated(self, reason: str) -> None:
        """The slot was lost (``reason``) and created again; its old confirmed LSN means nothing."""
        self._conn.execute(
            "INSERT INTO vectorizer.connector_state AS s (slot_name, slot_recreated_reason,"
            " slot_recreated_at, slot_recreations) VALUES (%s, %s, now(), 1)"
            " ON CONFLICT (slot_name) DO UPDATE SET confirmed_lsn = NULL,"
            " slot_recreated_reason = EXCLUDED.slot_recreated_reason, slot_recreated_at = now(),"
            " slot_recreations = s.slot_recreations + 1, updated_at = now()",
            (self.slot_name, reason),
        )

    def save_slot(self, *, cluster_id: str | None = None, confirmed_lsn: int | None = None) -> None:
        self._conn.execute(
            "INSERT INTO vectorizer.connector_state AS s (slot_name, cluster_id, confirmed_lsn)"
            " VALUES (%s, %s, %s::pg_lsn) ON CONFLICT (slot_name) DO UPDATE SET"
            " cluster_id = coalesce(EXCLUDED.cluster_id, s.cluster_id),"
            " confirmed_lsn = coalesce(EXCLUDED.confirmed_lsn, s.confirmed_lsn), updated_at = now()",
            (self.slot_name, cluster_id,
             None if confirmed_lsn is None else format_lsn(confirmed_lsn)),
        )
