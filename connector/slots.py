"""The connector's replication slots: every query about them, and creating one with a snapshot.

A slot is created over the replication protocol (:meth:`ReplicationStream.create_slot`: only
``CREATE_REPLICATION_SLOT`` can export a snapshot); everything else the connector asks about a
slot, or does to it, is SQL on ``pg_replication_slots``, written here once.

Two slots per database at most: the connector's own (``--slot``, kept across restarts, the
position it resumes from) and, while a table added later is being snapshotted,
:func:`pgai_orm.names.snapshot_slot_name` of it: a *temporary* slot that exists only to export
a snapshot at a known point and dies with its session (:mod:`connector.snapshot` explains why
that is gap-free).

A slot can be lost under the connector in two ways, both read by :meth:`Slot.health`: someone
drops it (``pg_drop_replication_slot``; the slot is simply missing), or the server invalidates
it: with ``max_slot_wal_keep_size`` set, a checkpoint removes WAL the slot still needs
(``wal_status = 'lost'``; PostgreSQL 17+ also names the cause in ``invalidation_reason``:
``wal_removed``, ``rows_removed``, ``wal_level_insufficient``, ``idle_timeout``). An
invalidated slot still exists, but ``START_REPLICATION`` on it fails for ever; the session
drops it and creates a new one (:class:`connector.reconcile.SlotAction`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, NamedTuple

import psycopg

from connector.replication import ReplicationStream
from connector.snapshot import import_snapshot
from pgai_orm.errors import InvariantError, VectorizerError
from pgai_orm.lsn import Lsn, parse_lsn
from pgai_orm.runtime.waiting import wait_until

__all__ = [
    "INVALIDATION_CAUSES",
    "ExportedSnapshot",
    "invalidation",
    "Slot",
    "SlotBusyError",
    "SlotError",
    "SlotHealth",
    "SlotInfo",
    "SlotMissingError",
    "export_snapshot",
]


class SlotError(VectorizerError):
    """A replication slot is not in the state the connector needs."""


class SlotMissingError(SlotError, LookupError):
    """The slot does not exist (or was invalidated: it has no ``restart_lsn``)."""


class SlotBusyError(SlotError, TimeoutError):
    """Another session keeps the slot active (a walsender we left, or another connector)."""


@dataclass(frozen=True, slots=True)
class SlotInfo:
    """What ``status()`` shows of a slot."""

    active: bool
    active_pid: int | None
    confirmed_lsn: str | None  # as Postgres writes it
    lag_bytes: int | None  # pg_current_wal_lsn() - confirmed_flush_lsn


@dataclass(frozen=True, slots=True)
class SlotHealth:
    """Whether the slot exists and whether the server still keeps what it needs."""

    exists: bool
    active: bool = False
    wal_status: str | None = None  # reserved, extended, unreserved, lost (PostgreSQL 13+)
    #: why the server invalidated the slot; None while it is usable (see :func:`invalidation`)
    invalidation_reason: str | None = None

    @property
    def invalidated(self) -> bool:
        return self.invalidation_reason is not None


#: What each invalidation reason means, for the one log line that reports it.
INVALIDATION_CAUSES: dict[str, str] = {
    "wal_removed": "a checkpoint removed WAL it still needed (max_slot_wal_keep_size)",
    "rows_removed": "rows it still needed were vacuumed away (standby conflict)",
    "wal_level_insufficient": "wal_level on the primary is below logical",
    "idle_timeout": "it was idle longer than idle_replication_slot_timeout",
    "conflicting": "it conflicted with recovery on a standby",
}


def invalidation(row: dict[str, Any]) -> str | None:
    """Why the slot described by ``row`` (``to_jsonb`` of its ``pg_replication_slots`` row) is
    invalidated, or None while it is usable. Columns that a server version lacks are absent."""
    reason = row.get("invalidation_reason")  # PostgreSQL 17+
    if reason:
        return str(reason)
    if row.get("wal_status") == "lost":
        return "wal_removed"
    if row.get("conflicting"):  # PostgreSQL 16: a logical slot on a standby lost its rows
        return "conflicting"
    return None


class Slot:
    """One replication slot, by name, queried on an autocommit connection."""

    def __init__(self, conn: psycopg.Connection[Any], name: str) -> None:
        self._conn = conn
        self.name = name

    def exists(self) -> bool:
        return self._conn.execute(
            "SELECT 1 FROM pg_replication_slots WHERE slot_name = %s", (self.name,)
        ).fetchone() is not None

    def health(self) -> SlotHealth:
        """Exists, and if so whether it is invalidated (read as JSON: the columns differ by
        server version)."""
        row = self._conn.execute(
            "SELECT to_jsonb(s) FROM pg_replication_slots s WHERE slot_name = %s", (self.name,)
        ).fetchone()
        if row is None:
            return SlotHealth(False)
        data = row[0]
        return SlotHealth(True, bool(data.get("active")), data.get("wal_status"), invalidation(data))

    def info(self) -> SlotInfo | None:
        row = self._conn.execute(
            "SELECT active, active_pid, confirmed_flush_lsn::text,"
            " (pg_current_wal_lsn() - confirmed_flush_lsn)::bigint"
            " FROM pg_replication_slots WHERE slot_name = %s", (self.name,)
        ).fetchone()
        if row is None:
            return None
        return SlotInfo(bool(row[0]), row[1], row[2], None if row[3] is None else int(row[3]))

    def lag_bytes(self) -> int | None:
        """WAL the slot pins beyond its confirmed position; None without the slot."""
        info = self.info()
        return None if info is None else info.lag_bytes

    def restart_lsn(self) -> Lsn:
        """Where decoding for the slot begins: the ``lsn`` of a snapshot's ``read`` events."""
        row = self._conn.execute(
            "SELECT restart_lsn::text FROM pg_replication_slots WHERE slot_name = %s", (self.name,)
        ).fetchone()
        if row is None or row[0] is None:
            raise SlotMissingError(f"slot {self.name!r} has no restart_lsn")
        return parse_lsn(row[0])

    def wait_inactive(self, timeout: float = 15.0) -> None:
        """A walsender we just left may hold the slot for a moment longer; wait for it."""
        def inactive() -> bool:
            row = self._conn.execute(
                "SELECT active FROM pg_replication_slots WHERE slot_name = %s", (self.name,)
            ).fetchone()
            return row is None or not row[0]

        if not wait_until(inactive, timeout, interval=0.05):
            raise SlotBusyError(f"replication slot {self.name!r} stays active (another connector?)")

    def drop(self) -> None:
        """Drop the slot if it exists (it must be inactive: :meth:`wait_inactive` first)."""
        self._conn.execute(
            "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots"
            " WHERE slot_name = %s", (self.name,))

    def drop_if_inactive(self) -> None:
        """Drop the slot if it exists and no session uses it (a temporary slot left behind)."""
        self._conn.execute(
            "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots"
            " WHERE slot_name = %s AND NOT active", (self.name,))


class ExportedSnapshot(NamedTuple):
    """A new slot's snapshot, imported: what a snapshot runner reads at."""

    conn: psycopg.Connection[Any]  # inside the snapshot (REPEATABLE READ, READ ONLY)
    consistent_lsn: Lsn  # L: the snapshot shows the transactions committed before it
    read_lsn: Lsn  # R: the slot's restart_lsn, the ``lsn`` of the ``read`` events


def export_snapshot(stream: ReplicationStream, slot: Slot, database_url: str, *,
                    temporary: bool = False) -> ExportedSnapshot:
    """Create the slot of ``stream`` (named as ``slot``) with an exported snapshot and import
    the snapshot on a new connection, before ``stream`` runs any other command."""
    created = stream.create_slot(export_snapshot=True, temporary=temporary)
    if created.snapshot_name is None:
        raise InvariantError(f"slot {slot.name!r} was created without the snapshot it was asked to export")
    conn = import_snapshot(database_url, created.snapshot_name)
    try:
        read_lsn = slot.restart_lsn()
    except BaseException:
        conn.close()
        raise
    return ExportedSnapshot(conn, created.consistent_lsn, read_lsn)
