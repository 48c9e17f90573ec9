"""One session with the slot: catalog -> replication stream -> Kafka, until an error or stop.

A session decides *when*; each step lives in its own module:

* every ``catalog_poll_s`` it reads the catalog and reconciles (:mod:`connector.reconcile`
  decides, this module carries it out): a first vectorizer creates the slot with an exported
  snapshot; a slot that is missing or was invalidated by the server is (dropped and) created
  again, and every table resynced from its snapshot; a table seen for the first time, whose
  topic the broker lost, or which is a new incarnation (table or all its vectorizers created
  again) is snapshotted through a temporary slot (:mod:`connector.snapshot` explains why that
  is gap-free, and why every snapshot is a full resync); a changed set of publications
  restarts the replication stream from the slot's confirmed LSN inside this process; no
  vectorizer left drops the slot and the connector idles;
* between polls it reads the stream in bounded batches, turns changes into records
  (:mod:`connector.events`) and hands them to the :class:`~connector.publisher.Publisher`;
* after every batch it confirms the highest commit LSN whose events Kafka acknowledged (and,
  when nothing is pending, the server's reported WAL end, so an idle slot does not pin WAL);
* every ``broker_check_s`` it compares the topics' ids with the ones it recorded.

A session holds every connection it opens (catalog connection, replication stream, producer,
admin client, snapshot thread) and closes them all; :class:`connector.service.Connector` starts
the next one, which resumes from the slot's confirmed LSN and the recorded snapshot progress.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Mapping
from functools import partial
from typing import Any

import psycopg

from connector.events import ChangeEncoder, Record, TableId, transaction_of
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
    XLogData,
    decode_message,
)
from connector.publisher import Publisher
from connector.reconcile import (
    FIRST,
    SLOT_DROPPED,
    SLOT_INVALIDATED,
    TABLE_RECREATED,
    VECTORIZER_RECREATED,
    SlotAction,
    SourceTable,
    desired_tables,
    forgotten,
    incarnations_to_record,
    lost_topics,
    needing_snapshot,
    resumes_snapshot,
    slot_action,
    slot_lost,
    snapshot_reason,
    stream_plan,
)
from connector.replication import ReplicationStream
from connector.settings import ConnectorSettings
from connector.slots import INVALIDATION_CAUSES, ExportedSnapshot, Slot, SlotHealth, export_snapshot
from connector.snapshot import SnapshotJob, SnapshotRunner
from connector.state import StateStore, TableState
from connector.topics import TopicAdmin
from connector.values import describe_types
from pgai_orm.catalog import catalog_exists, ensure_catalog, load_vectorizers
from pgai_orm.catalog.vectorizers import instance_id, source_key_names
from pgai_orm.errors import InvariantError, VectorizerError
from pgai_orm.events import Transaction
from pgai_orm.lsn import format_lsn
from pgai_orm.names import snapshot_slot_name

__all__ = ["BrokerLost", "OutOfTransactionError", "Session", "SnapshotFailedError"]

logger = logging.getLogger(__name__)


class BrokerLost(VectorizerError):
    """The broker no longer has the topics of ``tables``: the session starts over, and the
    next one snapshots those tables again (after a truncate)."""

    def __init__(self, tables: list[TableId]) -> None:
        super().__init__(f"the broker lost the topics of {tables}")
        self.tables = tables


class SnapshotFailedError(VectorizerError, RuntimeError):
    """The snapshot thread failed (its error is the cause); the next session resumes it."""


class OutOfTransactionError(InvariantError):
    """A row change arrived outside Begin/Commit: the server broke the pgoutput protocol."""


def source_oids(conn: psycopg.Connection[Any], tables: Mapping[TableId, SourceTable]) -> dict[TableId, int | None]:
    """The current OID of each source table (None: it does not exist), for the incarnation check."""
    if not tables:
        return {}
    ids = list(tables)
    rows = conn.execute(
        "SELECT u.i, to_regclass(format('%%I.%%I', u.s, u.t))::oid::bigint"
        " FROM unnest(%s::text[], %s::text[]) WITH ORDINALITY AS u(s, t, i)",
        ([s for s, _ in ids], [t for _, t in ids]),
    ).fetchall()
    return {ids[int(i) - 1]: (None if oid is None else int(oid)) for i, oid in rows}


class Session:
    """One run with the slot: lives until an error or stop; holds every connection it opens.

    ``resnapshot`` names the tables whose topic the broker lost, so that their next snapshot
    says so (``snapshot_reason`` ``broker_lost``); like every snapshot it ends with a truncate
    that removes rows deleted while the events were lost. It outlives sessions (the connector
    owns it); a table leaves it once its snapshot started.
    """

    def __init__(self, settings: ConnectorSettings, slot: str, database: str,
                 metrics: ConnectorMetrics, stop: threading.Event,
                 resnapshot: set[TableId] | None = None) -> None:
        self.s = settings
        self.database = database
        self.metrics = metrics
        self.stop = stop
        self.resnapshot: set[TableId] = resnapshot if resnapshot is not None else set()
        self.missing_sources: set[TableId] = set()  # logged once each
        self.conn = psycopg.connect(settings.database_url, autocommit=True)
        self.slot = Slot(self.conn, slot)
        self.state = StateStore(self.conn, slot)
        self._catalog_ready = False
        self.source: str | None = None  # the catalog instance id, in every event (read once)
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
        self.tables: dict[TableId, SourceTable] = {}
        self.floors: dict[TableId, int] = {}
        self.runner: SnapshotRunner | None = None
        self.txn: Transaction | None = None
        self.confirmed = 0
        self._idle_logged = False  # the "no vectorizer yet" line, once per idle spell

    # --- lifetime ---------------------------------------------------------------------------

    def close(self, *, graceful: bool = True) -> None:
        """Stop everything; ``graceful`` first waits for Kafka and confirms what it acknowledged
        (after a failure there is no point: the next session resends from the slot)."""
        self.stop_snapshot()
        try:
            self.stop_stream(flush=graceful)
        except Exception:  # closing after a failure: the slot resends anyway
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
                    raise SnapshotFailedError("snapshot failed") from self.runner.error
                self.runner = None
                next_catalog = 0.0  # tables waiting for a snapshot can go now
            stream = self.stream
            if stream is not None:
                self.pump(stream, timeout=min(0.2, max(0.0, next_catalog - time.monotonic())))
            else:
                self.publisher.check()
                self.stop.wait(0.1)

    # --- catalog ----------------------------------------------------------------------------

    def _ensure_catalog(self) -> None:
        """The state tables are part of the catalog install: make sure it is current (once)."""
        if not self._catalog_ready:
            ensure_catalog(self.conn)
            self.source = instance_id(self.conn)
            self._catalog_ready = True

    def reconcile(self) -> None:
        vectorizers = load_vectorizers(self.conn) if catalog_exists(self.conn) else []
        desired = desired_tables(vectorizers, self.s.topic_prefix, self.database)
        for tid, v in desired.missing.items():
            if tid not in self.missing_sources:
                # DROP TABLE ... CASCADE under a vectorizer: nothing left to read or snapshot
                # (the workers record the error in vectorizer.errors); the others go on
                logger.error("source table %s of vectorizer %s no longer exists; skipping it"
                             " until the vectorizer is dropped", v.source_qualified, v.name)
                self.missing_sources.add(tid)
        self.missing_sources.difference_update(desired.tables)
        self.tables = desired.tables
        health = self.slot.health()
        action = slot_action(bool(self.tables), health.exists, self.stream is not None,
                             invalidated=health.invalidated)
        if action is SlotAction.IDLE:
            if not self.tables and not self._idle_logged:
                logger.info("no vectorizer in database %s yet: waiting for one (create it with"
                            " op.create_vectorizer in an Alembic migration; the catalog is read"
                            " every %g s)", self.database, self.s.catalog_poll_s)
                self._idle_logged = True
            return
        self._idle_logged = False
        if action is SlotAction.DROP:
            self.drop_slot()
            return
        self._ensure_catalog()
        states = self.state.tables()
        oids = source_oids(self.conn, self.tables)
        if action in (SlotAction.CREATE, SlotAction.RECREATE):
            # first vectorizer, or the slot was dropped or invalidated behind our back
            self.create_slot(health, states, oids)
            return
        for tid in forgotten(self.tables, states):
            self.state.forget_table(*tid)
            del states[tid]
        for tid, oid in incarnations_to_record(self.tables, states, oids).items():
            self.state.record_incarnation(*tid, oid, frozenset(self.tables[tid].vectorizer_ids))
        if self.runner is None:
            pending = needing_snapshot(self.tables, states, oids, self.resnapshot)
            if pending:
                self._log_new_incarnations(pending, states, oids)
                self.snapshot_with_temporary_slot(
                    [self.tables[tid] for tid in pending], states, pending, oids)
        plan = stream_plan(self.tables, self.state.tables())
        self.floors = plan.floors
        if self.stream is None or plan.publications != self.stream_pubs:
            self.restart_stream(plan.publications)

    def _log_new_incarnations(self, pending: Mapping[TableId, str],
                              states: Mapping[TableId, TableState],
                              oids: Mapping[TableId, int | None]) -> None:
        for tid, reason in pending.items():
            st = states.get(tid)
            if st is None:
                continue
            name = ".".join(tid)
            if reason == TABLE_RECREATED:
                logger.warning("source table %s was dropped and created again (OID %s -> %s):"
                               " resyncing it from a new snapshot; its stores end equal to the"
                               " new table", name, st.source_oid, oids.get(tid))
            elif reason == VECTORIZER_RECREATED:
                logger.warning("every vectorizer of %s was created again (ids %s -> %s): changes"
                               " in between were streamed by no publication; resyncing the table"
                               " from a new snapshot, rows deleted meanwhile leave the stores",
                               name, sorted(st.vectorizer_ids or ()),
                               sorted(self.tables[tid].vectorizer_ids))

    # --- slots and snapshots ----------------------------------------------------------------

    def _snapshot_jobs(self, tables: list[SourceTable], exported: ExportedSnapshot,
                       states: Mapping[TableId, TableState], reasons: Mapping[TableId, str],
                       oids: Mapping[TableId, int | None]) -> list[SnapshotJob]:
        jobs = []
        consistent, read_lsn = exported.consistent_lsn, exported.read_lsn
        for table in tables:
            topic_id = self.admin.ensure(table.topic)
            prev = states.get(table.id)
            oid = oids.get(table.id)
            resume = resumes_snapshot(prev, table, topic_id, oid)
            reason = reasons.get(table.id, FIRST)
            # the closing truncate lies below the first attempt's rows: a resumed snapshot keeps
            # it (None only for a snapshot recorded before truncates were recorded)
            truncate_lsn: int | None = read_lsn - 1
            if resume and prev is not None:
                truncate_lsn, reason = prev.truncate_lsn, prev.snapshot_reason or reason
            else:
                self.metrics.snapshot_started(reason)
            self.state.start_snapshot(table.schema, table.table, table.topic, topic_id,
                                      consistent, read_lsn, None, resume=resume, source_oid=oid,
                                      vectorizer_ids=frozenset(table.vectorizer_ids),
                                      reason=reason, truncate_lsn=truncate_lsn)
            self.resnapshot.discard(table.id)
            jobs.append(SnapshotJob(
                table.schema, table.table, table.topic, table.key_columns, read_lsn, consistent,
                after=prev.snapshot_after if resume and prev else None,
                rows_done=prev.rows_done if resume and prev else 0,
                truncate_lsn=truncate_lsn, reason=reason,
            ))
        return jobs

    def _start_snapshot(self, tables: list[SourceTable], exported: ExportedSnapshot,
                        states: Mapping[TableId, TableState], reasons: Mapping[TableId, str],
                        oids: Mapping[TableId, int | None]) -> None:
        def progress(job: SnapshotJob, published: int) -> None:
            self.metrics.snapshot(f"{job.schema}.{job.table}", job.rows_done, job.rows_total)
            self.metrics.count("snapshot", published)

        try:
            jobs = self._snapshot_jobs(tables, exported, states, reasons, oids)
        except BaseException:
            exported.conn.close()
            raise
        self.publisher.forget_topics()
        self.runner = SnapshotRunner(exported.conn, jobs, self.publisher, self.s.database_url,
                                     self.slot.name, chunk_rows=self.s.snapshot_chunk_rows,
                                     on_progress=progress, source=self.source)
        self.runner.start()

    def stop_snapshot(self) -> None:
        """Stop the snapshot thread, if one runs; its progress so far is recorded."""
        if self.runner is not None:
            self.runner.stop()
            self.runner = None

    def create_slot(self, health: SlotHealth, states: Mapping[TableId, TableState],
                    oids: Mapping[TableId, int | None]) -> None:
        """No usable slot: drop an invalidated one, create it (again) and snapshot every table.

        A slot that streamed tables still wanted (same incarnation) was *lost*: the changes since
        its confirmed position are gone, so every table is resynced (each snapshot ends with a
        truncate that removes what it did not read). One WARNING line names the cause."""
        self.stop_snapshot()
        self.stop_stream(flush=True)
        slot_gone: str | None = None
        cause: str | None = None
        count = len(self.tables)
        if health.invalidated:
            cause = str(health.invalidation_reason)
            slot_gone = SLOT_INVALIDATED
            logger.warning(
                "replication slot %s was invalidated by PostgreSQL (%s: %s); the changes it held"
                " are lost: dropping it, creating a new slot and resyncing all %d table(s) from its"
                " snapshot (rows deleted meanwhile leave the stores)", self.slot.name, cause,
                INVALIDATION_CAUSES.get(cause, "see pg_replication_slots"), count)
            self.slot.wait_inactive()
            self.slot.drop()
        elif slot_lost(self.tables, states, oids):
            cause = "dropped"
            slot_gone = SLOT_DROPPED
            logger.warning(
                "replication slot %s no longer exists although it streamed %d table(s) (dropped"
                " by hand?); the changes since it went are lost: creating a new slot and resyncing"
                " all %d table(s) from its snapshot (rows deleted meanwhile leave the stores)",
                self.slot.name, len([t for t in states if t in self.tables]), count)
        if cause is not None:
            self.metrics.recreated_slot(cause)
            self.state.record_slot_recreated(cause)
        reasons: dict[TableId, str] = {}
        for tid, table in self.tables.items():
            reason = snapshot_reason(table, states.get(tid), oids.get(tid), slot_gone=slot_gone,
                                     topic_lost=tid in self.resnapshot)
            reasons[tid] = reason or FIRST
        self._log_new_incarnations({t: r for t, r in reasons.items() if r not in (SLOT_DROPPED, SLOT_INVALIDATED)},
                                   states, oids)
        self.state.forget_all()
        self.create_slot_and_snapshot(list(self.tables.values()), reasons, oids)

    def create_slot_and_snapshot(self, tables: list[SourceTable], reasons: Mapping[TableId, str],
                                 oids: Mapping[TableId, int | None]) -> None:
        """First vectorizer (or the slot was lost): the slot itself exports the snapshot."""
        pubs = sorted({p for t in tables for p in t.publications})
        stream = ReplicationStream.open(self.s.database_url, self.slot.name, pubs,
                                        status_interval=self.s.status_interval_s)
        try:
            exported = export_snapshot(stream, self.slot, self.s.database_url)
            logger.info("created slot %s: consistent at %s, restart at %s", self.slot.name,
                        format_lsn(exported.consistent_lsn), format_lsn(exported.read_lsn))
            self._start_snapshot(tables, exported, {}, reasons, oids)
            self.floors = {t.id: exported.consistent_lsn for t in tables}
            self._start(stream, frozenset(pubs))
        except BaseException:
            stream.close()
            raise

    def snapshot_with_temporary_slot(self, tables: list[SourceTable],
                                     states: Mapping[TableId, TableState],
                                     reasons: Mapping[TableId, str],
                                     oids: Mapping[TableId, int | None]) -> None:
        """A table added (or lost, half-snapshotted, or re-created) while the slot exists."""
        self.stop_stream(flush=True)  # confirmed C <= the temporary slot's consistent point
        temp = Slot(self.conn, snapshot_slot_name(self.slot.name))
        pubs = sorted({p for t in tables for p in t.publications})
        temp.drop_if_inactive()
        with ReplicationStream.open(self.s.database_url, temp.name, pubs) as tmp:
            exported = export_snapshot(tmp, temp, self.s.database_url, temporary=True)
        logger.info("snapshot of %s at %s (read lsn %s) through a temporary slot",
                    {".".join(t.id): reasons.get(t.id, FIRST) for t in tables},
                    format_lsn(exported.consistent_lsn), format_lsn(exported.read_lsn))
        self._start_snapshot(tables, exported, states, reasons, oids)

    def drop_slot(self) -> None:
        self.stop_snapshot()
        self.stop_stream(flush=True)
        self.slot.wait_inactive()
        self.slot.drop()
        if self._catalog_ready or catalog_exists(self.conn):
            self._ensure_catalog()
            self.state.forget_all()
        logger.info("no vectorizer left: dropped slot %s, idling", self.slot.name)

    # --- the stream -------------------------------------------------------------------------

    def _start(self, stream: ReplicationStream, pubs: frozenset[str]) -> None:
        self.encoder = ChangeEncoder({t.id: t.key_columns for t in self.tables.values()},
                                     describe=partial(describe_types, self.conn),
                                     source_names=partial(source_key_names, self.conn),
                                     source=self.source)
        stream.start()
        self.stream = stream
        self.stream_pubs = pubs
        self.txn = None

    def restart_stream(self, pubs: frozenset[str]) -> None:
        self.stop_stream(flush=True)
        if not pubs:
            return
        self.slot.wait_inactive()
        stream = ReplicationStream.open(self.s.database_url, self.slot.name, sorted(pubs),
                                        status_interval=self.s.status_interval_s)
        try:
            self._start(stream, pubs)
        except BaseException:
            stream.close()
            raise
        logger.info("streaming slot %s with publications %s", self.slot.name, sorted(pubs))

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

    def pump(self, stream: ReplicationStream, timeout: float) -> None:
        batch = stream.read_batch(max_messages=self.s.batch_messages, timeout=timeout)
        if batch:
            self.handle(batch)
        self.publisher.check()
        self.confirm(stream)

    def _topic(self, table: TableId | None, txn: Transaction) -> str | None:
        """The topic a change of ``table`` in ``txn`` goes to; None when the table is not
        streamed, or the transaction is already in the table's snapshot."""
        if table is None:
            return None
        floor = self.floors.get(table)
        if floor is None or txn.commit_lsn is None or txn.commit_lsn < floor:
            return None
        return self.tables[table].topic

    def _publish(self, topic: str, records: list[Record]) -> int:
        send = self.publisher.send_tracked
        for key, value in records:
            send(topic, key, value)
        return len(records)

    def handle(self, batch: list[XLogData]) -> None:
        """Publish the changes of ``batch``: the connector's hot path (no object per change
        beyond its records)."""
        encoder = self.encoder
        publish = self._publish
        topic_of = self._topic
        txn = self.txn
        count = 0
        for data in batch:
            msg = decode_message(data.payload)
            match msg:
                case Insert() if txn is not None:
                    topic = topic_of(encoder.table_of(msg.relation_id), txn)
                    if topic is not None:  # else not ours, or already in the table's snapshot
                        count += publish(topic, encoder.insert(msg, data.start_lsn, txn))
                case Update() if txn is not None:
                    topic = topic_of(encoder.table_of(msg.relation_id), txn)
                    if topic is not None:  # else not ours, or already in the table's snapshot
                        count += publish(topic, encoder.update(msg, data.start_lsn, txn))
                case Delete() if txn is not None:
                    topic = topic_of(encoder.table_of(msg.relation_id), txn)
                    if topic is not None:  # else not ours, or already in the table's snapshot
                        count += publish(topic, encoder.delete(msg, data.start_lsn, txn))
                case Begin():
                    txn = transaction_of(msg)
                case Commit():
                    self.publisher.commit(msg.end_lsn)
                    txn = None
                case Relation():
                    encoder.relation(msg)
                case Type():
                    encoder.type(msg)
                case Truncate() if txn is not None:
                    for table, truncate in encoder.truncate(msg, data.start_lsn, txn):
                        topic = topic_of(table, txn)
                        if topic is not None:
                            count += self.publisher.send_truncate(topic, truncate)
                case Insert() | Update() | Delete() | Truncate():
                    raise OutOfTransactionError(f"{type(msg).__name__} arrived outside Begin/Commit")
        self.txn = txn
        self.publisher.drain()
        if count:
            self.metrics.count("stream", count)

    # --- health -----------------------------------------------------------------------------

    def check_broker(self) -> None:
        states = self.state.tables() if self._catalog_ready else {}
        if not states:
            return
        lost = lost_topics(states, self.admin.topic_ids(st.topic for st in states.values()))
        if not lost:
            return
        logger.warning("broker lost the topics of %s: snapshotting them again", sorted(lost))
        self.stop_snapshot()
        for tid in lost:
            self.state.forget_table(*tid)
        self.admin.delete(states[tid].topic for tid in lost)
        self.state.save_slot(cluster_id=self.admin.cluster_id())
        # A fresh session: a new producer with no stale partition metadata; the forgotten
        # tables are snapshotted again through a temporary slot.
        raise BrokerLost(sorted(lost))

    def update_lag(self) -> None:
        self.metrics.slot_lag_bytes.set(self.slot.lag_bytes() or 0)
        if self._catalog_ready and self.confirmed:
            self.state.save_slot(confirmed_lsn=self.confirmed)
