"""The read model behind ``vectorizer status`` and ``vectorizer errors``.

Everything is read from where the pipeline itself keeps its truth, so the numbers cannot drift
from what the services do: the catalog (``vectorizer.*`` tables), the embedding stores and
``pg_replication_slots`` (WAL the connector has not confirmed yet). Topic and consumer-group
names come from :mod:`pgai_orm.names`, the same functions the services use. What the
connector's own tables and the broker say is added by the operator commands
(:mod:`infra.ops.report`). Every function takes an open psycopg connection (autocommit).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from psycopg import sql

from pgai_orm.catalog.errors import start_errors
from pgai_orm.catalog.usage import UsageRow, read_usage
from pgai_orm.catalog.vectorizers import catalog_exists
from pgai_orm.errors import VectorizerError
from pgai_orm.names import DEFAULT_TOPIC_PREFIX, SLOT_PREFIX, consumer_group, topic_name

__all__ = [
    "ConnectorPhase",
    "NoCatalogError",
    "Report",
    "SlotStatus",
    "SnapshotProgress",
    "UnknownVectorizerError",
    "VectorizerStatus",
    "VersionStatus",
    "read_errors",
    "read_report",
    "read_slots",
    "read_versions",
    "serving_version",
]


class UnknownVectorizerError(VectorizerError, LookupError):
    """No vectorizer of that name exists in the catalog."""

    def __init__(self, name: str) -> None:
        super().__init__(f"vectorizer {name!r} does not exist")
        self.name = name


class NoCatalogError(VectorizerError, LookupError):
    """The database has no vectorizer catalog (no migration created a vectorizer yet)."""

    def __init__(self) -> None:
        super().__init__("no vectorizer catalog in this database")


@dataclass
class VersionStatus:
    """One config version of a vectorizer and how far its store got."""

    version: int
    status: str
    store: str
    rows_applied: int
    rows_with_chunks: int
    chunks: int
    last_applied_lsn: str | None
    #: source rows whose store state changed in the last 60 s, per second (a row counts once)
    rows_per_s_last_minute: float = 0.0
    consumer_group: str | None = None
    consumer_lag: int | None = None  # events in the topic the group has not committed yet
    #: why its worker processes cannot start (its ``start`` error), None while they can
    start_error: str | None = None
    #: the consumer lag a worker last recorded (``vectorizer.worker_progress``) and when: what
    #: the SQL view shows, and the lag to show when no broker is given
    pending_recorded: int | None = None
    pending_recorded_at: Any = None


@dataclass
class SnapshotProgress:
    """An initial snapshot or resync of the source table, as the connector recorded it.

    ``rows_total`` is the planner's estimate of the table's rows while it runs (it needs no
    ANALYZE), None only before the connector recorded one."""

    reason: str  # why it runs: first, slot_dropped, slot_invalidated, broker_lost, ...
    rows_done: int
    rows_total: int | None


@dataclass
class ConnectorPhase:
    """What the connector does with a vectorizer's source table (``vectorizer status --json``:
    ``{"state", "slot", "lag_bytes", "snapshot"}``).

    ``state``: ``not_seen`` (no connector recorded the table yet), ``snapshotting`` (its first
    snapshot), ``resyncing`` (a later snapshot: ``snapshot.reason`` says why), ``streaming``, or
    ``waiting_for_resync`` (the slot is ``missing`` or ``lost``: the connector resyncs it).
    ``lag_bytes`` is the slot's WAL not yet confirmed (not yet in Kafka)."""

    state: str = "not_seen"
    slot: str | None = None
    lag_bytes: int | None = None
    snapshot: SnapshotProgress | None = None
    slot_state: str | None = None  # the slot's state when waiting for a resync

    def describe(self) -> str:
        """The phase in words, for the text report and logs."""
        if self.state == "not_seen":
            return "not seen by a connector yet"
        if self.state == "waiting_for_resync":
            return f"waiting for a resync (slot {self.slot_state})"
        if self.snapshot is not None and self.state in ("snapshotting", "resyncing"):
            snap = self.snapshot
            total = "?" if snap.rows_total is None else str(max(snap.rows_total, snap.rows_done))
            verb = "snapshotting" if self.state == "snapshotting" else f"resyncing ({snap.reason})"
            return f"{verb} {snap.rows_done}/{total} rows"
        return self.state


@dataclass
class VectorizerStatus:
    """``vectorizer status`` for one vectorizer."""

    name: str
    source: str
    source_rows: int | None  # None: the source table was dropped (see `vectorizer errors`)
    serving_version: int
    errors: int
    versions: list[VersionStatus] = field(default_factory=list)
    topic: str | None = None
    connector: ConnectorPhase = field(default_factory=ConnectorPhase)
    #: tokens, requests and 429s per config version, provider and model (``vectorizer.usage``)
    usage: list[UsageRow] = field(default_factory=list)
    #: paused (``vectorizer pause``, ``op.disable_vectorizer``): nothing is embedded, changes
    #: wait in Kafka; ``paused_at`` since when (None while it runs)
    paused: bool = False
    paused_at: Any = None


@dataclass
class SlotStatus:
    """A connector slot: ``lag_bytes`` of WAL written but not yet confirmed (= not in Kafka).

    ``state`` is what the server says (``ok``, or ``lost`` once it invalidated the slot, with
    ``invalidation_reason``); the operator commands add the connector's view: ``missing`` (a
    slot the connector recorded that no longer exists), ``recreated`` (created again, tables
    being resynced), the last re-creation and the resync progress.
    """

    name: str
    active: bool
    confirmed_flush_lsn: str | None
    lag_bytes: int | None
    state: str = "ok"
    wal_status: str | None = None
    invalidation_reason: str | None = None
    recreated_reason: str | None = None  # why the connector last created it again
    recreated_at: Any = None
    recreations: int = 0
    resync_tables: int = 0  # tables whose resync (a snapshot after their first) is under way
    resync_rows_done: int = 0
    resync_rows_total: int = 0


@dataclass
class Report:
    """Everything ``vectorizer status`` shows."""

    database: str
    slots: list[SlotStatus]
    vectorizers: list[VectorizerStatus]
    kafka: str | None  # None: no broker given; otherwise "ok" or why lags are missing


def _count(conn: Any, schema: str, table: str) -> int:
    query = sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(schema, table))
    row = conn.execute(query).fetchone()
    return int(row[0]) if row else 0


def _table_exists(conn: Any, schema: str, table: str) -> bool:
    row = conn.execute("SELECT to_regclass(format('%%I.%%I', %s::text, %s::text)) IS NOT NULL",
                       (schema, table)).fetchone()
    return bool(row and row[0])


def read_slots(conn: Any) -> list[SlotStatus]:
    """The connector's logical slots in this database, with unconfirmed WAL in bytes and whether
    the server invalidated them (``wal_status`` ``lost``; ``invalidation_reason`` on 17+, read
    through ``to_jsonb`` because older servers lack the column)."""
    rows = conn.execute(
        "SELECT slot_name, active, confirmed_flush_lsn::text,"
        "       pg_wal_lsn_diff(pg_current_wal_lsn(), confirmed_flush_lsn)::bigint,"
        "       wal_status, to_jsonb(s) ->> 'invalidation_reason'"
        "  FROM pg_replication_slots s"
        " WHERE slot_type = 'logical' AND database = current_database() AND slot_name LIKE %s"
        " ORDER BY slot_name",
        (SLOT_PREFIX + "%",),
    ).fetchall()
    out = []
    for name, active, confirmed, lag, wal_status, reason in rows:
        if reason is None and wal_status == "lost":
            reason = "wal_removed"
        out.append(SlotStatus(name, bool(active), confirmed, None if lag is None else int(lag),
                              "lost" if reason else "ok", wal_status, reason))
    return out


def read_versions(conn: Any, vectorizer_id: int) -> list[VersionStatus]:
    """The versions of one vectorizer that are not retired, with what their stores hold."""
    rows = conn.execute(
        "SELECT cv.version, cv.status, cv.target_schema, cv.target_table,"
        "       count(a.pk), count(a.pk) FILTER (WHERE cardinality(a.chunk_hashes) > 0),"
        "       coalesce(sum(cardinality(a.chunk_hashes)), 0), max(a.lsn)::text,"
        "       count(a.pk) FILTER (WHERE a.updated_at > now() - interval '60 seconds')"
        "  FROM vectorizer.config_versions cv"
        "  LEFT JOIN vectorizer.applied_state a"
        "    ON a.vectorizer_id = cv.vectorizer_id AND a.version = cv.version"
        " WHERE cv.vectorizer_id = %s AND cv.status <> 'retired'"
        " GROUP BY cv.version, cv.status, cv.target_schema, cv.target_table ORDER BY cv.version",
        (vectorizer_id,),
    ).fetchall()
    versions = []
    for version, status, schema, table, applied, with_chunks, hashed_chunks, lsn, recent in rows:
        # The store is the truth for chunks; applied_state's hash count is the fallback when the
        # table is being renamed under us by an activation.
        # A column destination (no store table, target NULL): its vectors are the applied hashes.
        stored = table is not None and _table_exists(conn, schema, table)
        chunks = _count(conn, schema, table) if stored else int(hashed_chunks)
        store = f"{schema}.{table}" if table is not None else "(embedding column of the source)"
        versions.append(VersionStatus(int(version), status, store, int(applied),
                                      int(with_chunks), chunks, lsn, round(int(recent) / 60, 2)))
    return versions


def read_report(conn: Any, prefix: str = DEFAULT_TOPIC_PREFIX) -> Report:
    """The catalog, stores and slots of the database of ``conn`` (``kafka`` left ``None``).

    ``prefix`` is the services' topic prefix; topics and consumer groups are named with it.
    """
    row = conn.execute("SELECT current_database()").fetchone()
    database = str(row[0])
    slots = read_slots(conn)
    if not catalog_exists(conn):
        return Report(database, slots, [], None)
    rows = conn.execute(
        "SELECT v.id, v.name, v.source_schema, v.source_table, v.config_version,"
        "       (SELECT count(*) FROM vectorizer.errors e WHERE e.vectorizer_id = v.id),"
        "       v.paused_at"
        "  FROM vectorizer.vectorizers v ORDER BY v.id"
    ).fetchall()
    progress = {(int(r[0]), int(r[1])): (r[2], r[3]) for r in conn.execute(
        "SELECT vectorizer_id, version, pending, measured_at FROM vectorizer.worker_progress"
        " WHERE pending IS NOT NULL").fetchall()}
    vectorizers = []
    cannot_start = start_errors(conn)
    usage = read_usage(conn)
    for vid, name, schema, table, serving, errors, paused_at in rows:
        source_rows = _count(conn, schema, table) if _table_exists(conn, schema, table) else None
        status = VectorizerStatus(name, f"{schema}.{table}", source_rows, int(serving),
                                  int(errors), read_versions(conn, int(vid)))
        status.topic = topic_name(prefix, database, schema, table)
        status.paused, status.paused_at = paused_at is not None, paused_at
        for version in status.versions:
            version.consumer_group = consumer_group(prefix, database, int(vid), version.version)
            start_error = cannot_start.get((int(vid), version.version))
            version.start_error = start_error.message if start_error else None
            recorded = progress.get((int(vid), version.version))
            if recorded is not None:
                version.pending_recorded, version.pending_recorded_at = int(recorded[0]), recorded[1]
        status.usage = [u for u in usage if u.vectorizer_id == int(vid)]
        vectorizers.append(status)
    return Report(database, slots, vectorizers, None)


def read_errors(conn: Any, name: str | None, limit: int) -> list[dict[str, Any]]:
    """The newest ``limit`` rows of ``vectorizer.errors`` (of vectorizer ``name`` when given).

    Each row is a dict of ``id, name, version, pk, step, message, details, lsn, recorded_at``.
    Raises :class:`UnknownVectorizerError` when ``name`` names no vectorizer.
    """
    if not catalog_exists(conn):
        return []
    if name is not None and conn.execute(
            "SELECT 1 FROM vectorizer.vectorizers WHERE name = %s", (name,)).fetchone() is None:
        raise UnknownVectorizerError(name)
    cur = conn.execute(
        "SELECT e.id, v.name, e.version, e.pk, e.step, e.message, e.details, e.lsn::text,"
        "       e.recorded_at"
        "  FROM vectorizer.errors e JOIN vectorizer.vectorizers v ON v.id = e.vectorizer_id"
        " WHERE %(name)s::text IS NULL OR v.name = %(name)s"
        " ORDER BY e.id DESC LIMIT %(limit)s",
        {"name": name, "limit": limit},
    )
    columns = [c.name for c in cur.description or ()]
    return [dict(zip(columns, row, strict=True)) for row in cur.fetchall()]


def serving_version(conn: Any, name: str) -> int | None:
    """The config version vectorizer ``name`` serves queries from; None when it does not exist."""
    row = conn.execute("SELECT config_version FROM vectorizer.vectorizers WHERE name = %s",
                       (name,)).fetchone()
    return None if row is None else int(row[0])
