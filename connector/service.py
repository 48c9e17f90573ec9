"""The connector process: one active connector per slot, sessions, retry; and ``status()``.

The work of streaming is a :class:`~connector.session.Session` (see :mod:`connector.session`);
this module keeps sessions going.

Only one connector per slot runs: :meth:`Connector.run` first takes a session-level advisory
lock keyed by the slot name (:func:`pgai_orm.names.connector_lock_key`) and, while another
process holds it, retries every second as a hot standby. Any error ends the session
(connections, producer, snapshot thread) and a new one starts from the slot's confirmed LSN and
the recorded snapshot progress (at-least-once, nothing lost) after an exponential backoff (1, 2,
4, ... s, at most ``retry_max_s``); a database or broker that cannot be reached is one WARNING
line per try naming it and the setting to check, not a traceback. A broker that
lost topics starts a new session at once (fresh producer metadata) that snapshots those tables
again. A slot that is gone or was invalidated is seen by the next session's first catalog poll,
which creates it again and resyncs every table (:mod:`connector.session`): a session that fails
on ``START_REPLICATION`` of an invalidated slot does not retry for ever.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

import psycopg

from connector.events import TableId
from connector.metrics import ConnectorMetrics
from connector.reconcile import RESYNC_REASONS, SLOT_DROPPED, SLOT_INVALIDATED
from connector.session import BrokerLost, Session
from connector.settings import ConnectorSettings
from connector.slots import Slot, SlotHealth
from connector.state import SlotRecord, StateStore, state_exists
from pgai_orm.errors import InvariantError
from pgai_orm.names import connector_lock_key, default_slot_name
from pgai_orm.runtime.backoff import Backoff
from pgai_orm.runtime.failures import describe_unreachable, one_line
from pgai_orm.runtime.urls import describe_database

__all__ = ["Connector", "ConnectorSettings", "slot_state", "status"]

logger = logging.getLogger(__name__)


def _current_database(conn: psycopg.Connection[Any]) -> str:
    row = conn.execute("SELECT current_database()").fetchone()
    if row is None:
        raise InvariantError("SELECT current_database() returned no row")
    return str(row[0])


class Connector:
    """Runs sessions on the slot for as long as ``stop`` is not set (see the module doc)."""

    def __init__(self, settings: ConnectorSettings, stop: threading.Event | None = None) -> None:
        self.settings = settings
        self.stop = stop or threading.Event()
        self.backoff = Backoff(cap=settings.retry_max_s)
        self.database: str = self._database_name(settings.database_url)
        self.slot = settings.slot or default_slot_name(self.database)
        self.metrics = ConnectorMetrics(self.slot)
        self._resnapshot: set[TableId] = set()

    def _unreachable(self, exc: BaseException) -> str | None:
        """One line naming what cannot be reached and what to check (None: not that kind)."""
        return describe_unreachable(exc, database_url=self.settings.database_url,
                                    bootstrap_servers=self.settings.bootstrap_servers)

    def _retry_later(self, message: str) -> None:
        delay = self.backoff.next_delay()
        logger.warning("%s; retrying in %.0f s", message, delay)
        self.stop.wait(delay)

    def _database_name(self, url: str) -> str:
        """The database's name; waits (backoff, one line per try) until the database answers.

        Returns ``""`` when stopped while waiting (the caller then does not run)."""
        logger.info("connector starting: waiting for the database %s", describe_database(url))
        while True:
            try:
                with psycopg.connect(url, autocommit=True, connect_timeout=10) as conn:
                    name = _current_database(conn)
                    self.backoff.reset()
                    return name
            except psycopg.OperationalError as exc:
                if self.stop.is_set():
                    return ""
                self._retry_later(self._unreachable(exc) or one_line(exc))
                if self.stop.is_set():
                    return ""

    def _acquire_lock(self) -> psycopg.Connection[Any] | None:
        """Hold the slot's advisory lock on a session connection; None once stopped."""
        logged = False
        while not self.stop.is_set():
            conn = psycopg.connect(self.settings.database_url, autocommit=True)
            row = conn.execute("SELECT pg_try_advisory_lock(hashtext(%s))",
                               (connector_lock_key(self.slot),)).fetchone()
            if row and row[0]:
                return conn
            conn.close()
            if not logged:
                logger.info("another connector holds slot %s: waiting as standby", self.slot)
                logged = True
            self.stop.wait(self.settings.lock_retry_s)
        return None

    def run(self) -> None:
        if self.settings.metrics_port is not None:
            self.metrics.serve(self.settings.metrics_port)
        while not self.stop.is_set():
            try:
                lock = self._acquire_lock()
            except psycopg.OperationalError as exc:
                self._retry_later(self._unreachable(exc) or one_line(exc))
                continue
            if lock is None:
                return
            self.metrics.active.set(1)
            logger.info("connector active on slot %s of database %s; Kafka %s", self.slot,
                        self.database, self.settings.bootstrap_servers)
            try:
                self._serve()
            finally:
                self.metrics.active.set(0)
                lock.close()

    def _serve(self) -> None:
        """Sessions, one after the other, while this process holds the lock.

        A failure to reach the database or the broker is one WARNING line and a retry after
        an exponential backoff (reset once a session ran for the backoff's cap); any other
        failure is logged with its traceback and retried the same way."""
        while not self.stop.is_set():
            session: Session | None = None
            started = time.monotonic()
            try:
                session = Session(self.settings, self.slot, self.database, self.metrics, self.stop,
                                  self._resnapshot)
                session.run()
            except BrokerLost as lost:
                self._resnapshot.update(lost.tables)
                logger.warning("restarting the session after the broker lost %s", lost.tables)
                if session is not None:
                    session.close(graceful=False)
                    session = None
                continue
            except Exception as exc:  # every failure resumes from the slot
                if session is not None:
                    try:
                        session.close(graceful=False)
                    except Exception:  # the failure is logged below; this is cleanup
                        logger.debug("close after failure failed", exc_info=True)
                    session = None
                if time.monotonic() - started >= self.backoff.cap:
                    self.backoff.reset()  # it ran a while: this is a new outage
                message = self._unreachable(exc)
                if message is None:
                    logger.exception("connector session failed; resuming from the slot")
                    message = "connector session failed (traceback above)"
                self._retry_later(message)
                return  # re-take the lock: a standby may have the slot now
            finally:
                if session is not None:
                    session.close()


def slot_state(health: SlotHealth, record: SlotRecord | None, tables: list[dict[str, Any]]) -> str:
    """``ok``, ``lost`` (invalidated by the server: the connector drops it, creates a new one and
    resyncs), ``missing`` (gone while tables are recorded: the connector creates it again and
    resyncs), ``recreated`` (created again, resync under way), or ``none`` (never created)."""
    if health.exists:
        if health.invalidated:
            return "lost"
        resyncing = any(t["status"] == "snapshotting"
                        and t["snapshot_reason"] in (SLOT_DROPPED, SLOT_INVALIDATED) for t in tables)
        return "recreated" if resyncing and record is not None and record.recreations else "ok"
    return "missing" if tables else "none"


def status(database_url: str, slot: str | None = None) -> dict[str, Any]:
    """What ``vectorizer status`` shows: the slot (state, lag, last re-creation), per-table
    snapshot progress and why each snapshot ran, and the resync in progress."""
    with psycopg.connect(database_url, autocommit=True) as conn:
        slot = slot or default_slot_name(_current_database(conn))
        handle = Slot(conn, slot)
        info = handle.info()
        health = handle.health()
        tables: list[dict[str, Any]] = []
        record: SlotRecord | None = None
        if state_exists(conn):
            store = StateStore(conn, slot)
            record = store.slot()
            for st in store.tables().values():
                tables.append({
                    "schema": st.schema, "table": st.table, "topic": st.topic,
                    "status": st.status, "snapshot_rows": st.rows_done,
                    "snapshot_rows_total": st.rows_total,
                    "snapshot_reason": st.snapshot_reason,
                    "resync": st.status == "snapshotting" and st.snapshot_reason in RESYNC_REASONS,
                })
    resyncing = [t for t in tables if t["resync"]]
    return {
        "slot": slot,
        "slot_exists": info is not None,
        "slot_state": slot_state(health, record, tables),
        "wal_status": health.wal_status,
        "invalidation_reason": health.invalidation_reason,
        "active": bool(info and info.active),
        "active_pid": info.active_pid if info else None,
        "confirmed_lsn": info.confirmed_lsn if info else None,
        "lag_bytes": info.lag_bytes if info else None,
        "recreated": None if record is None or not record.recreations else {
            "reason": record.recreated_reason, "at": record.recreated_at,
            "count": record.recreations,
        },
        "resync": {
            "tables": len(resyncing),
            "rows_done": sum(t["snapshot_rows"] for t in resyncing),
            "rows_total": sum(t["snapshot_rows_total"] or 0 for t in resyncing),
        },
        "tables": sorted(tables, key=lambda t: (t["schema"], t["table"])),
    }
