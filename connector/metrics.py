"""Prometheus metrics of the connector (served on ``--metrics-port``).

Why these: slot lag in bytes is the one number that says WAL is piling up on the database
(an orphaned or stuck connector fills the disk); the events counter (``rate()`` of it is the
events/s) and the last confirmed LSN say the pipeline moves; snapshot progress against the
table's rows says how long until a new vectorizer has all rows; snapshots
by reason and slot re-creations say that a lifecycle event (slot dropped or invalidated, broker
loss, vectorizer or table created again) made the connector resync tables.

Snapshot progress also feeds listeners (:meth:`ConnectorMetrics.on_snapshot`): the CLI's
progress bar or progress log lines. The service reports a table with ``snapshot(table, done,
total)`` after every acknowledged chunk and once more, followed by ``count("snapshot", 0)``,
when the table is finished (a chunk always has rows, so a count of 0 marks the end).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    disable_created_metrics,
    start_http_server,
)

__all__ = ["ConnectorMetrics", "SnapshotListener"]

logger = logging.getLogger(__name__)

# Names follow the Prometheus naming guide: counters end in _total (added by the client), gauges
# never do; no _created series (a timestamp per counter that no dashboard reads).
disable_created_metrics()

#: ``listener(table, rows_done, rows_total_estimate_or_None, finished)``
SnapshotListener = Callable[[str, int, "int | None", bool], None]


class ConnectorMetrics:
    """The connector's metrics in a registry of their own (tests start several connectors)."""

    def __init__(self, slot: str) -> None:
        self.registry = CollectorRegistry()
        labels = {"slot": slot}
        self.slot_lag_bytes = Gauge(
            "vectorizer_connector_slot_lag_bytes",
            "pg_current_wal_lsn() - confirmed_flush_lsn of the connector's slot",
            ["slot"], registry=self.registry,
        ).labels(**labels)
        self.confirmed_lsn = Gauge(
            "vectorizer_connector_confirmed_lsn",
            "Last LSN confirmed to Postgres (every event up to it is acknowledged by Kafka)",
            ["slot"], registry=self.registry,
        ).labels(**labels)
        self.events = Counter(
            "vectorizer_connector_events",
            "Events published to Kafka (stream and snapshot)",
            ["slot", "source"], registry=self.registry,
        )
        self.snapshot_rows = Gauge(
            "vectorizer_connector_snapshot_rows",
            "Rows of the running initial snapshot published and acknowledged",
            ["slot", "table"], registry=self.registry,
        )
        self.snapshot_table_rows = Gauge(
            "vectorizer_connector_snapshot_table_rows",
            "Rows of the table being snapshotted: the planner's estimate while the snapshot runs,"
            " the exact count (the rows it read) once it is done",
            ["slot", "table"], registry=self.registry,
        )
        self.snapshots = Counter(
            "vectorizer_connector_snapshots",
            "Table snapshots started (each a full resync), by reason: first, slot_dropped,"
            " slot_invalidated, broker_lost, vectorizer_recreated, table_recreated",
            ["slot", "reason"], registry=self.registry,
        )
        self.slot_recreated = Counter(
            "vectorizer_connector_slot_recreated",
            "Times the connector created its slot again after it was lost, by reason"
            " (dropped, or the server's invalidation reason such as wal_removed)",
            ["slot", "reason"], registry=self.registry,
        )
        self.active = Gauge(
            "vectorizer_connector_active",
            "1 while this process holds the slot, 0 while it waits as standby",
            ["slot"], registry=self.registry,
        ).labels(**labels)
        self._slot = slot
        self._listeners: list[SnapshotListener] = []
        self._last_snapshot: tuple[str, int, int | None] | None = None
        self._lock = threading.Lock()

    def serve(self, port: int) -> None:
        start_http_server(port, registry=self.registry)

    def on_snapshot(self, listener: SnapshotListener) -> None:
        """Call ``listener`` on every snapshot progress report (from the snapshot thread)."""
        self._listeners.append(listener)

    def _notify(self, table: str, done: int, total: int | None, finished: bool) -> None:
        for listener in self._listeners:
            try:
                listener(table, done, total, finished)
            except Exception:  # a progress display must never fail a snapshot
                logger.debug("snapshot progress listener failed", exc_info=True)

    def count(self, source: str, n: int = 1) -> None:
        self.events.labels(slot=self._slot, source=source).inc(n)
        if source == "snapshot" and n == 0:
            with self._lock:
                last, self._last_snapshot = self._last_snapshot, None
            if last is not None:
                self._notify(*last, True)

    def snapshot_started(self, reason: str) -> None:
        self.snapshots.labels(slot=self._slot, reason=reason).inc()

    def recreated_slot(self, reason: str) -> None:
        self.slot_recreated.labels(slot=self._slot, reason=reason).inc()

    def snapshot(self, table: str, done: int, total: int | None) -> None:
        self.snapshot_rows.labels(slot=self._slot, table=table).set(done)
        if total is not None:
            self.snapshot_table_rows.labels(slot=self._slot, table=table).set(total)
        with self._lock:
            self._last_snapshot = (table, done, total)
        self._notify(table, done, total, False)
