"""What ``vectorizer status`` reports: the catalog's read model, the connector, the broker.

The catalog, the stores and the slots are read by :func:`pgai_orm.catalog.report.read_report`.
Added here: each table's phase from the connector's state (initial snapshot or resync with
progress, or streaming; :func:`connector.service.status`), each slot's state as the connector
sees it (``missing``, ``lost``, ``recreated``, the resync in progress) and, when a broker is
given, each consumer group's lag: the topic's high-water marks minus the group's committed
offsets (:mod:`processors.offsets`, which needs no faust).
"""

from __future__ import annotations

import asyncio
from typing import Any

import psycopg

from infra.urls import libpq_url
from pgai_orm.catalog import report as catalog_report
from pgai_orm.catalog.report import ConnectorPhase, Report, SlotStatus, SnapshotProgress
from pgai_orm.errors import InvariantError
from pgai_orm.runtime.failures import BROKER_HINT, describe_unreachable, one_line

__all__ = ["add_connector_progress", "add_consumer_lags", "read_report"]


def read_report(database_url: str) -> Report:
    """The catalog, stores, slots and connector phases of ``database_url`` (no broker needed)."""
    with psycopg.connect(libpq_url(database_url), autocommit=True) as conn:
        report = catalog_report.read_report(conn)
    if report.vectorizers or report.slots:
        add_connector_progress(database_url, report)
    return report


def add_connector_progress(database_url: str, report: Report) -> None:
    """Set each vectorizer's ``connector`` to its table's phase, as the connector recorded it,
    and each slot's state as the connector sees it; a slot the connector streamed tables from
    that no longer exists is added as ``missing``."""
    from connector.service import status as connector_status
    from connector.state import recorded_slots

    url = libpq_url(database_url)
    with psycopg.connect(url, autocommit=True) as conn:
        recorded = [r.slot_name for r in recorded_slots(conn)]
    statuses = {slot.name: connector_status(url, slot.name) for slot in report.slots}
    for name in recorded:
        if name not in statuses:
            info = connector_status(url, name)
            if info["slot_state"] == "missing":
                statuses[name] = info
                report.slots.append(SlotStatus(name, False, None, None, state="missing"))
    report.slots.sort(key=lambda s: s.name)
    for slot in report.slots:
        info = statuses[slot.name]
        if info["slot_state"] != "none":
            slot.state = info["slot_state"]
        recreated = info["recreated"]
        if recreated:
            slot.recreated_reason = recreated["reason"]
            slot.recreated_at = recreated["at"]
            slot.recreations = recreated["count"]
        resync = info["resync"]
        slot.resync_tables = resync["tables"]
        slot.resync_rows_done = resync["rows_done"]
        slot.resync_rows_total = resync["rows_total"]
        for table in info["tables"]:
            phase = _phase(slot, table)
            source = f"{table['schema']}.{table['table']}"
            for vz in report.vectorizers:
                if vz.source == source:
                    vz.connector = phase


def _phase(slot: SlotStatus, table: dict[str, Any]) -> ConnectorPhase:
    """One table's phase as the connector recorded it (see :class:`ConnectorPhase`)."""
    phase = ConnectorPhase(slot=slot.name, lag_bytes=slot.lag_bytes)
    if slot.state in ("lost", "missing"):  # what it recorded no longer streams
        phase.state, phase.slot_state = "waiting_for_resync", slot.state
    elif table["status"] == "streaming":
        phase.state = "streaming"
    else:
        phase.state = "resyncing" if table["resync"] else "snapshotting"
        phase.snapshot = SnapshotProgress(table.get("snapshot_reason") or "first",
                                          int(table.get("snapshot_rows") or 0),
                                          table.get("snapshot_rows_total"))
    return phase


async def _consumer_lags(report: Report, bootstrap_servers: str) -> None:
    from processors.offsets import committed_offsets, fetch_high_watermarks

    for vz in report.vectorizers:
        if vz.topic is None:
            raise InvariantError(f"vectorizer {vz.name}: the report names no topic")
        marks = await fetch_high_watermarks(bootstrap_servers, vz.topic, timeout=5.0)
        for version in vz.versions:
            if marks is None:  # no topic yet: the connector has published nothing
                version.consumer_lag = 0
                continue
            if version.consumer_group is None:
                raise InvariantError(f"vectorizer {vz.name} version {version.version}: no group")
            committed = await committed_offsets(bootstrap_servers, version.consumer_group, vz.topic)
            version.consumer_lag = sum(max(0, hw - committed.get(p, 0)) for p, hw in marks.items())


def add_consumer_lags(report: Report, bootstrap_servers: str, timeout: float = 20.0) -> None:
    """Fill ``consumer_lag`` per version; on broker trouble say why in ``report.kafka``."""
    try:
        asyncio.run(asyncio.wait_for(_consumer_lags(report, bootstrap_servers), timeout))
        report.kafka = "ok"
    except Exception as exc:  # noqa: BLE001 - any broker failure only costs the lag column, never the report
        reason = describe_unreachable(exc, bootstrap_servers=bootstrap_servers)
        if reason is None and isinstance(exc, TimeoutError):
            reason = (f"the Kafka broker {bootstrap_servers} did not answer within {timeout:.0f} s:"
                      f" {BROKER_HINT}")
        report.kafka = f"consumer lag unavailable: {reason or f'{type(exc).__name__}: {one_line(exc)}'}"
