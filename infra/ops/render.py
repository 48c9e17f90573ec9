"""How the operator commands print: aligned plain-text tables, one-line cells, JSON values."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from pgai_orm.catalog.report import Report, SlotStatus

__all__ = ["jsonable", "one_line", "render_errors", "render_report", "render_table", "slot_state"]


def render_table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A plain-text table with aligned columns (numbers right-aligned)."""
    cells = [[("-" if v is None else str(v)) for v in row] for row in rows]
    widths = [max([len(h), *(len(r[i]) for r in cells)]) for i, h in enumerate(headers)]
    numeric = [all(isinstance(row[i], int | float) or row[i] is None for row in rows) and bool(rows)
               for i in range(len(headers))]

    def line(values: Sequence[str]) -> str:
        return "  ".join(v.rjust(w) if num else v.ljust(w)
                         for v, w, num in zip(values, widths, numeric, strict=True)).rstrip()

    return "\n".join([line(list(headers)), line(["-" * w for w in widths]),
                      *(line(r) for r in cells)])


def render_report(report: Report) -> str:
    """The human-readable form of ``vectorizer status``."""
    out = [f"database {report.database}"]
    if report.slots:
        out.append("")
        out.append(render_table(
            ["replication slot", "active", "confirmed LSN", "WAL not yet in Kafka (bytes)", "state"],
            [[s.name, "yes" if s.active else "no", s.confirmed_flush_lsn, s.lag_bytes,
              slot_state(s)] for s in report.slots]))
    else:
        out.append("no replication slot yet (the connector has not run against this database)")
    if not report.vectorizers:
        out.append("no vectorizers (create one with op.create_vectorizer in a migration)")
    for vz in report.vectorizers:
        out.append("")
        rows = "table dropped" if vz.source_rows is None else f"{vz.source_rows} rows"
        out.append(f"vectorizer {vz.name}: source {vz.source} ({rows}), "
                   f"serving version {vz.serving_version}, {vz.errors} errors")
        out.append(f"  connector: {vz.connector}; topic {vz.topic}")
        for v in vz.versions:
            if v.start_error:
                out.append(f"  version {v.version} cannot start: {v.start_error}")
        out.append(render_table(
            ["version", "status", "store", "rows applied", "rows with chunks", "chunks",
             "last applied LSN", "rows/s (1 min)", "consumer lag"],
            [[v.version, v.status, v.store, v.rows_applied, v.rows_with_chunks, v.chunks,
              v.last_applied_lsn, v.rows_per_s_last_minute, v.consumer_lag]
             for v in vz.versions]))
    if report.kafka is None:
        out.append("\n(consumer lag: pass --kafka-bootstrap-servers or set KAFKA_BOOTSTRAP_SERVERS)")
    elif report.kafka != "ok":
        out.append(f"\n({report.kafka})")
    return "\n".join(out)


def slot_state(slot: SlotStatus) -> str:
    """The state cell of a slot: what is wrong with it and what the connector does about it."""
    if slot.state == "lost":
        return (f"lost ({slot.invalidation_reason or 'invalidated'}): the connector drops it,"
                " creates a new one and resyncs every table")
    if slot.state == "missing":
        return "missing: the connector creates it again and resyncs every table"
    text = slot.state
    if slot.state == "recreated":
        text += f" (was {slot.recreated_reason})"
    if slot.resync_tables:
        text += (f", resyncing {slot.resync_tables} table(s):"
                 f" {slot.resync_rows_done}/{slot.resync_rows_total} rows")
    return text


def render_errors(rows: Sequence[dict[str, Any]]) -> str:
    """The table of ``vectorizer errors`` (rows of :func:`pgai_orm.catalog.report.read_errors`).

    A row's message is cut to one short line; an error of a whole table or version (no key:
    ``source``, ``start``) is shown in full, since it names the fix.
    """
    return render_table(
        ["id", "vectorizer", "version", "key", "step", "message", "lsn", "recorded at"],
        [[r["id"], r["name"], r["version"], None if r["pk"] is None else json.dumps(r["pk"]),
          r["step"], one_line(r["message"], 80 if r["pk"] is not None else 1000), r["lsn"],
          jsonable(r["recorded_at"])] for r in rows])


def one_line(text: str, width: int = 80) -> str:
    """``text`` on one line, cut to ``width`` characters with an ellipsis."""
    flat = " ".join(str(text).split())
    return flat if len(flat) <= width else flat[: width - 1] + "…"


def jsonable(value: Any) -> Any:
    """Timestamps as ISO 8601 text; anything else as it is."""
    return value.isoformat() if hasattr(value, "isoformat") else value
