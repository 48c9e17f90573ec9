"""The connector's main loop: catalog -> replication slot -> Kafka, one process per database.

Each step lives in its own module; this one only decides *when*:

* every ``catalog_poll_s`` it reads the catalog (:func:`pgai_orm.catalog.load_vectorizers`) and
  reconciles: a first vectorizer creates the slot with an exported snapshot; a table seen for
  the first time (or whose topic the broker lost) is snapshotted through a temporary slot
  (:mod:`connector.snapshot` explains why that is gap-free); a changed set of publications
  restarts the replication stream from the slot's confirmed LSN inside this process; no
  vectorizer left drops the slot and the connector idles;
* between polls it reads the stream in bounded batches, turns changes into records
  (:mod:`connector.events`) and hands them to the :class:`~connector.publisher.Publisher`;
* after every batch it confirms the highest commit LSN whose events Kafka acknowledged (and,
  when nothing is pending, the server's reported WAL end, so an idle slot does not pin WAL);
* every ``broker_check_s`` it compares the topics' ids with the ones it recorded.

Only one connector per slot runs: :meth:`Connector.run` first takes a session-level advisory
lock keyed by the slot name and, while another process holds it, retries every second as a hot
standby. Any error ends the session (connections, producer, snapshot thread) and a new one
starts after a second from the slot's confirmed LSN and the recorded snapshot progress:
at-least-once, nothing lost.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import psycopg

from connector.events import ChangeEncoder, TableId, TxnInfo
from connector.lsn import parse_lsn
from connector.metrics import ConnectorMetrics
from connector.pgoutput import (
    Begin,
    Commit,
    Delete,
    Insert,
    Relation,
    Truncate,
    Type,
    Update,
    decode_message,
)
from connector.publisher import Publisher
from connector.replication import ReplicationStream
from connector.snapshot import SnapshotJob, SnapshotRunner, import_snapshot
from connector.state import StateStore, TableState
from connector.topics import TopicAdmin, topic_name
from pgai_orm.catalog import catalog_exists, load_vectorizers
from pgai_orm.names import SLOT_PREFIX

__all__ = ["ConnectorSettings", "Connector", "default_slot_name", "status"]

logger = logging.getLogger(__name__)


def default_slot_name(database: str) -> str:
    """``vectorizer_<database>``, lower-cased, other characters as ``_``, at most 58 chars
    (room for the ``_snap`` suffix of the temporary snapshot slot)."""
    return re.sub(r"[^a-z0-9_]", "_", f"{SLOT_PREFIX}_{database}".lower())[:58]


@dataclass(frozen=True, slots=True)
class ConnectorSettings:
    """Runtime settings. The defaults suit production; tests shorten the intervals."""

    database_url: str
    bootstrap_servers: str
    slot: str | None = None
    topic_prefix: str = "vectorizer"
    partitions: int = 6
    replication_factor: int = 1
    metrics_port: int | None = None
    catalog_poll_s: float = 1.0
    broker_check_s: float = 5.0
    status_interval_s: float = 10.0
    batch_messages: int = 5000
    snapshot_chunk_rows: int = 5000
    lock_retry_s: float = 1.0


@dataclass(slots=True)
class _Table:
    schema: str
    table: str
    key_columns: list[str]
    topic: str
    publications: set[str] = field(default_factory=set)

    @property
    def id(self) -> TableId:
        return (self.schema, self.table)


def _wait_slot_inactive(conn: psycopg.Connection[Any], slot: str, timeout: float = 15.0) -> None:
    """A walsender we just left may hold the slot for a moment longer; wait for it."""
    deadline = time.monotonic() + timeout
    while True:
        row = conn.execute(
            "SELECT active FROM pg_replication_slots WHERE slot_name = %s", (slot,)
        ).fetchone()
        if row is None or not row[0]:
            return
        if time.monotonic() > deadline:
            raise TimeoutError(f"replication slot {slot!r} stays active (another connector?)")
        time.sleep(0.05)


def _restart_lsn(conn: psycopg.Connection[Any], slot: str) -> int:
    row = conn.execute(
        "SELECT restart_lsn::text FROM pg_replication_slots WHERE slot_name = %s", (slot,)
    ).fetchone()
    if row is None or row[0] is None:
        raise RuntimeError(f"slot {slot!r} has no restart_lsn")
    return parse_lsn(row[0])


class BrokerLost(Exception):
    """The broker no longer has (these) topics; the session starts over."""


class _Session:
    """One run with the slot: lives until an error or stop; holds every connection it opens."""

    def __init__(self, settings: ConnectorSettings, slot: str, database: str,
                 metrics: ConnectorMetrics, stop: threading.Event) -> None:
        self.s = settings
        self.slot = slot
        self.database = database
        self.metrics = metrics
        self.stop = stop
        # Tables whose topic the broker lost: their new snapshot first sends a truncate below
        # its read LSN, so rows deleted while the events were lost leave the stores too.
        self.resnapshot: set[TableId] = set()
        self.missing_sources: set[TableId] = set()  # logged once each
        self.conn = psycopg.connect(settings.database_url, autocommit=True)
        self.state = StateStore(self.conn, slot)
        self._state_ready = False
        try:
            self.admin = TopicAdmin(settings.bootstrap_servers, partitions=settings.partitions,
                                    replication_factor=settings.replication_factor)
            try:
                self.publisher = Publisher(settings.bootstrap_servers)
            except BaseException:
                self.admin.close()
                raise
        except BaseException:
            self.conn.close()
            raise
        self.stream: ReplicationStream | None = None
        self.stream_pubs: frozenset[str] = frozenset()
        self.encoder = ChangeEncoder()
        self.tables: dict[TableId, _Table] = {}
        self.floors: dict[TableId, int] = {}
        self.runner: SnapshotRunner | None = None
        self.txn: TxnInfo | None = None
        self.confirmed = 0

    # --- lifetime ---------------------------------------------------------------------------

    def close(self, *, graceful: bool = True) -> None:
        """Stop everything; ``graceful`` first waits for Kafka and confirms what it acknowledged
        (after a failure there is no point: the next session resends from the slot)."""
        if self.runner is not None:
            self.runner.stop()
            self.runner.join(timeout=30)
        try:
            self.stop_stream(flush=graceful)
        except Exception:  # noqa: BLE001 (closing after a failure: the slot resends anyway)
            logger.debug("stopping the stream on close failed", exc_info=True)
        if self.stream is not None:
            self.stream.close()
        self.publisher.close()
        self.admin.close()
        self.conn.close()

    def run(self) -> None:
        next_catalog = next_broker = next_lag = 0.0
        while not self.stop.is_set():
            now = time.monotonic()
            if now >= next_catalog:
                self.reconcile()
                next_catalog = now + self.s.catalog_poll_s
            if now >= next_broker and self.tables:
                self.check_broker()
                next_broker = now + self.s.broker_check_s
            if now >= next_lag:
                self.update_lag()
                next_lag = now + 2.0
            if self.runner is not None and not self.runner.is_alive():
                if self.runner.error is not None:
                    raise RuntimeError("snapshot failed") from self.runner.error
                self.runner = None
                next_catalog = 0.0  # tables waiting for a snapshot can go now
            if self.stream is not None:
                self.pump(timeout=min(0.2, max(0.0, next_catalog - time.monotonic())))
            else:
                self.publisher.check()
                self.stop.wait(0.1)
            self.metrics.update_rate(self.publisher.sent)

    # --- catalog ----------------------------------------------------------------------------

    def load_tables(self) -> dict[TableId, _Table]:
        tables: dict[TableId, _Table] = {}
        for v in load_vectorizers(self.conn):
            tid = (v.source_schema, v.source_table)
            if not v.source_exists:
                # DROP TABLE ... CASCADE under a vectorizer: nothing left to read or snapshot
                # (the workers record the error in vectorizer.errors); the others go on
                if tid not in self.missing_sources:
                    logger.error("source table %s of vectorizer %s no longer exists; skipping it"
                                 " until the vectorizer is dropped", v.source_qualified, v.name)
                    self.missing_sources.add(tid)
                continue
            self.missing_sources.discard(tid)
            table = tables.get(tid)
            if table is None:
                topic = topic_name(self.s.topic_prefix, self.database, *tid)
                table = tables[tid] = _Table(*tid, [c.attname for c in v.source_pk], topic)
            table.publications.add(v.publication_name)
        return tables

    def reconcile(self) -> None:
        if not catalog_exists(self.conn):
            desired: dict[TableId, _Table] = {}
        else:
            desired = self.load_tables()
        self.tables = desired
        slot_exists = self.conn.execute(
            "SELECT 1 FROM pg_replication_slots WHERE slot_name = %s", (self.slot,)
        ).fetchone() is not None
        if not desired:
            if self.stream is not None or slot_exists:
                self.drop_slot()
            return
        if not self._state_ready:
            self.state.ensure()
            self._state_ready = True
        states = self.state.tables()
        for tid in set(states) - set(desired):
            self.state.forget_table(*tid)
            states.pop(tid)
        if not slot_exists:  # first vectorizer, or the slot was dropped behind our back
            if self.runner is not None:
                self.runner.stop()
                self.runner.join(timeout=30)
                self.runner = None
            self.stop_stream(flush=True)
            self.state.forget_all()
            self.create_slot_and_snapshot(list(desired.values()))
            return
        if self.runner is None:
            pending = [t for tid, t in desired.items()
                       if tid not in states or states[tid].status == "snapshotting"]
            if pending:
                self.snapshot_with_temporary_slot(pending, states)
        states = self.state.tables()
        self.floors = {tid: st.stream_from_lsn for tid, st in states.items() if tid in desired}
        pubs = frozenset(p for tid in self.floors for p in desired[tid].publications)
        if self.stream is None or pubs != self.stream_pubs:
            self.restart_stream(pubs)

    # --- slots and snapshots ----------------------------------------------------------------

    def _snapshot_jobs(self, tables: list[_Table], consistent: int, read_lsn: int,
                       states: dict[TableId, TableState]) -> list[SnapshotJob]:
        jobs = []
        for table in tables:
            topic_id = self.admin.ensure(table.topic)
            prev = states.get(table.id)
            resume = (prev is not None and prev.status == "snapshotting"
                      and prev.topic_id == topic_id and prev.topic == table.topic)
            self.state.start_snapshot(table.schema, table.table, table.topic, topic_id,
                                      consistent, read_lsn, None, resume=resume)
            jobs.append(SnapshotJob(
                table.schema, table.table, table.topic, table.key_columns, read_lsn, consistent,
                after=prev.snapshot_after if resume and prev else None,
                rows_done=prev.rows_done if resume and prev else 0,
                truncate_first=table.id in self.resnapshot,  # sent only while after is None
            ))
        return jobs

    def _start_runner(self, conn: psycopg.Connection[Any], jobs: list[SnapshotJob]) -> None:
        def progress(job: SnapshotJob, published: int) -> None:
            self.metrics.snapshot(f"{job.schema}.{job.table}", job.rows_done, job.rows_total)
            self.metrics.count("snapshot", published)

        self.publisher.forget_topics()
        self.runner = SnapshotRunner(conn, jobs, self.publisher, self.s.database_url, self.slot,
                                     chunk_rows=self.s.snapshot_chunk_rows, on_progress=progress)
        self.runner.start()

    def create_slot_and_snapshot(self, tables: list[_Table]) -> None:
        """First vectorizer (or the slot was lost): the slot itself exports the snapshot."""
        pubs = sorted({p for t in tables for p in t.publications})
        stream = ReplicationStream.open(self.s.database_url, self.slot, pubs,
                                        status_interval=self.s.status_interval_s)
        try:
            created = stream.create_slot(export_snapshot=True)
            assert created.snapshot_name is not None
            snap = import_snapshot(self.s.database_url, created.snapshot_name)
        except BaseException:
            stream.close()
            raise
        read_lsn = _restart_lsn(self.conn, self.slot)
        logger.info("created slot %s: consistent at %X, restart at %X", self.slot,
                    created.consistent_lsn, read_lsn)
        jobs = self._snapshot_jobs(tables, created.consistent_lsn, read_lsn, {})
        self._start_runner(snap, jobs)
        self.floors = {t.id: created.consistent_lsn for t in tables}
        self._start(stream, frozenset(pubs))

    def snapshot_with_temporary_slot(self, tables: list[_Table],
                                     states: dict[TableId, TableState]) -> None:
        """A table added (or lost, or half-snapshotted) while the slot exists."""
        self.stop_stream(flush=True)  # confirmed C <= the temporary slot's consistent point
        temp = f"{self.slot[:58]}_snap"
        pubs = sorted({p for t in tables for p in t.publications})
        self.conn.execute(
            "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots"
            " WHERE slot_name = %s AND NOT active", (temp,))
        with ReplicationStream.open(self.s.database_url, temp, pubs) as tmp:
            created = tmp.create_slot(export_snapshot=True, temporary=True)
            assert created.snapshot_name is not None
            snap = import_snapshot(self.s.database_url, created.snapshot_name)
            read_lsn = _restart_lsn(self.conn, temp)
        logger.info("snapshot of %s at %X (read lsn %X) through a temporary slot",
                    [t.id for t in tables], created.consistent_lsn, read_lsn)
        jobs = self._snapshot_jobs(tables, created.consistent_lsn, read_lsn, states)
        self._start_runner(snap, jobs)

    def drop_slot(self) -> None:
        if self.runner is not None:
            self.runner.stop()
            self.runner.join(timeout=30)
            self.runner = None
        self.stop_stream(flush=True)
        _wait_slot_inactive(self.conn, self.slot)
        self.conn.execute(
            "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots"
            " WHERE slot_name = %s", (self.slot,))
        if self._state_ready or catalog_exists(self.conn):
            self.state.ensure()
            self._state_ready = True
            self.state.forget_all()
        logger.info("no vectorizer left: dropped slot %s, idling", self.slot)

    # --- the stream -------------------------------------------------------------------------

    def _start(self, stream: ReplicationStream, pubs: frozenset[str]) -> None:
        self.encoder = ChangeEncoder({t.id: t.key_columns for t in self.tables.values()})
        stream.start()
        self.stream = stream
        self.stream_pubs = pubs
        self.txn = None

    def restart_stream(self, pubs: frozenset[str]) -> None:
        self.stop_stream(flush=True)
        if not pubs:
            return
        _wait_slot_inactive(self.conn, self.slot)
        stream = ReplicationStream.open(self.s.database_url, self.slot, sorted(pubs),
                                        status_interval=self.s.status_interval_s)
        try:
            self._start(stream, pubs)
        except BaseException:
            stream.close()
            raise
        logger.info("streaming slot %s with publications %s", self.slot, sorted(pubs))

    def stop_stream(self, *, flush: bool) -> None:
        """Wait for Kafka to acknowledge what was sent, confirm it, close the stream."""
        stream = self.stream
        if stream is None:
            return
        self.stream = None
        try:
            if flush:
                self.publisher.flush()
                self.publisher.tracker.discard_open()
                self.confirm(stream)
        finally:
            stream.close()
            self.publisher.tracker.reset()
            self.txn = None

    def confirm(self, stream: ReplicationStream) -> None:
        tracker = self.publisher.tracker
        safe = tracker.safe_lsn()
        if self.txn is None and tracker.idle():
            safe = max(safe, stream.wal_end)
        if safe > self.confirmed or safe > stream.flushed_lsn:
            stream.send_feedback(safe)
            self.confirmed = max(self.confirmed, safe)
            self.metrics.confirmed_lsn.set(self.confirmed)

    def pump(self, timeout: float) -> None:
        stream = self.stream
        assert stream is not None
        batch = stream.read_batch(max_messages=self.s.batch_messages, timeout=timeout)
        if batch:
            self.handle(batch)
        self.publisher.check()
        self.confirm(stream)

    def handle(self, batch: list[Any]) -> None:
        encoder = self.encoder
        send = self.publisher.send_tracked
        tables = self.tables
        floors = self.floors
        txn = self.txn
        count = 0
        for data in batch:
            msg = decode_message(data.payload)
            kind = type(msg)
            if kind is Insert or kind is Update or kind is Delete:
                tid = encoder.table_of(msg.relation_id)  # type: ignore[union-attr]
                floor = floors.get(tid)  # type: ignore[arg-type]
                if floor is None or txn is None or txn.commit_lsn < floor:
                    continue  # not ours, or already in the table's snapshot
                if kind is Insert:
                    records = encoder.insert(msg, data.start_lsn, txn)  # type: ignore[arg-type]
                elif kind is Update:
                    records = encoder.update(msg, data.start_lsn, txn)  # type: ignore[arg-type]
                else:
                    records = encoder.delete(msg, data.start_lsn, txn)  # type: ignore[arg-type]
                topic = tables[tid].topic  # type: ignore[index]
                for record in records:
                    send(topic, record.key, record.value)
                count += len(records)
            elif kind is Begin:
                txn = TxnInfo.from_begin(msg)  # type: ignore[arg-type]
            elif kind is Commit:
                self.publisher.commit(msg.end_lsn)  # type: ignore[union-attr]
                txn = None
            elif kind is Relation:
                encoder.relation(msg)  # type: ignore[arg-type]
            elif kind is Type:
                encoder.type(msg)  # type: ignore[arg-type]
            elif kind is Truncate:
                assert txn is not None
                for record in encoder.truncate(msg, data.start_lsn, txn):  # type: ignore[arg-type]
                    floor = floors.get(record.table)
                    if floor is None or txn.commit_lsn < floor:
                        continue
                    topic = tables[record.table].topic
                    for partition in self.publisher.partitions_for(topic):
                        send(topic, record.key, record.value, partition)
                        count += 1
        self.txn = txn
        self.publisher.drain()
        if count:
            self.metrics.count("stream", count)

    # --- health -----------------------------------------------------------------------------

    def check_broker(self) -> None:
        states = self.state.tables() if self._state_ready else {}
        if not states:
            return
        ids = self.admin.topic_ids(st.topic for st in states.values())
        lost = {tid for tid, st in states.items() if ids.get(st.topic) != st.topic_id}
        if not lost:
            return
        logger.warning("broker lost the topics of %s: snapshotting them again", sorted(lost))
        if self.runner is not None:
            self.runner.stop()
            self.runner.join(timeout=30)
            self.runner = None
        for tid in lost:
            self.state.forget_table(*tid)
        self.admin.delete(states[tid].topic for tid in lost)
        self.state.save_slot(cluster_id=self.admin.cluster_id())
        # A fresh session: a new producer with no stale partition metadata; the forgotten
        # tables are snapshotted again through a temporary slot.
        raise BrokerLost(sorted(lost))

    def update_lag(self) -> None:
        row = self.conn.execute(
            "SELECT (pg_current_wal_lsn() - confirmed_flush_lsn)::bigint"
            " FROM pg_replication_slots WHERE slot_name = %s", (self.slot,)
        ).fetchone()
        self.metrics.slot_lag_bytes.set(row[0] if row and row[0] is not None else 0)
        if self._state_ready and self.confirmed:
            self.state.save_slot(confirmed_lsn=self.confirmed)


class Connector:
    """Runs sessions on the slot for as long as ``stop`` is not set (see the module doc)."""

    def __init__(self, settings: ConnectorSettings) -> None:
        self.settings = settings
        self.database: str = self._database_name(settings.database_url)
        self.slot = settings.slot or default_slot_name(self.database)
        self.metrics = ConnectorMetrics(self.slot)
        self.stop = threading.Event()
        self._resnapshot: set[TableId] = set()

    @staticmethod
    def _database_name(url: str, wait_s: float = 120.0) -> str:
        """The database's name; a database that is restarting is waited for (like ``run`` does)."""
        deadline = time.monotonic() + wait_s
        while True:
            try:
                with psycopg.connect(url, autocommit=True, connect_timeout=10) as conn:
                    row = conn.execute("SELECT current_database()").fetchone()
                    assert row is not None
                    return str(row[0])
            except psycopg.OperationalError:
                if time.monotonic() >= deadline:
                    raise
                logger.warning("database unreachable at start, retrying", exc_info=True)
                time.sleep(1.0)

    def _acquire_lock(self) -> psycopg.Connection[Any] | None:
        """Hold the slot's advisory lock on a session connection; None once stopped."""
        logged = False
        while not self.stop.is_set():
            conn = psycopg.connect(self.settings.database_url, autocommit=True)
            row = conn.execute("SELECT pg_try_advisory_lock(hashtext(%s))",
                               (f"vectorizer-connector:{self.slot}",)).fetchone()
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
            except psycopg.OperationalError:
                logger.warning("database unreachable, retrying", exc_info=True)
                self.stop.wait(1.0)
                continue
            if lock is None:
                return
            self.metrics.active.set(1)
            logger.info("connector active on slot %s", self.slot)
            try:
                self._serve()
            finally:
                self.metrics.active.set(0)
                lock.close()

    def _serve(self) -> None:
        while not self.stop.is_set():
            session = None
            try:
                session = _Session(self.settings, self.slot, self.database, self.metrics, self.stop)
                session.resnapshot = self._resnapshot
                session.run()
            except BrokerLost as lost:
                self._resnapshot.update(lost.args[0] if lost.args else ())
                logger.warning("restarting the session after the broker lost %s", lost)
                session.close(graceful=False)
                session = None
                continue
            except Exception:  # noqa: BLE001 (every failure resumes from the slot)
                logger.exception("connector session failed; resuming from the slot in 1 s")
                if session is not None:
                    try:
                        session.close(graceful=False)
                    except Exception:  # noqa: BLE001
                        logger.debug("close after failure failed", exc_info=True)
                    session = None
                self.stop.wait(1.0)
                return  # re-take the lock: a standby may have the slot now
            finally:
                if session is not None:
                    session.close()


def status(database_url: str, slot: str | None = None) -> dict[str, Any]:
    """What ``vectorizer status`` shows: the slot, its lag, and per-table snapshot progress."""
    with psycopg.connect(database_url, autocommit=True) as conn:
        row = conn.execute("SELECT current_database()").fetchone()
        assert row is not None
        slot = slot or default_slot_name(row[0])
        slot_row = conn.execute(
            "SELECT active, active_pid, confirmed_flush_lsn::text,"
            " (pg_current_wal_lsn() - confirmed_flush_lsn)::bigint"
            " FROM pg_replication_slots WHERE slot_name = %s", (slot,)
        ).fetchone()
        tables: list[dict[str, Any]] = []
        if conn.execute("SELECT to_regclass('vectorizer.connector_tables') IS NOT NULL").fetchone()[0]:  # type: ignore[index]
            for st in StateStore(conn, slot).tables().values():
                tables.append({
                    "schema": st.schema, "table": st.table, "topic": st.topic,
                    "status": st.status, "snapshot_rows": st.rows_done,
                    "snapshot_rows_total": st.rows_total,
                })
    return {
        "slot": slot,
        "slot_exists": slot_row is not None,
        "active": bool(slot_row and slot_row[0]),
        "active_pid": slot_row[1] if slot_row else None,
        "confirmed_lsn": slot_row[2] if slot_row else None,
        "lag_bytes": int(slot_row[3]) if slot_row and slot_row[3] is not None else None,
        "tables": sorted(tables, key=lambda t: (t["schema"], t["table"])),
    }
