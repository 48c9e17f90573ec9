"""How the operator commands print: aligned plain-text tables, one-line cells, JSON values."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from pgai_orm.catalog.report import Report, SlotStatus, VersionStatus

__all__ = ["ERROR_KEYS", "error_json", "jsonable", "one_line", "render_errors", "render_report", "render_table", "slot_note", "slot_state"]


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


#: Width the text report is laid out for (a terminal's 100 columns): long explanations go on
#: lines of their own below a table, not into its cells.
REPORT_WIDTH = 100


def render_report(report: Report) -> str:
    """The human-readable form of ``vectorizer status`` (fits :data:`REPORT_WIDTH` columns for
    names of ordinary length)."""
    out = [f"database {report.database}"]
    if report.slots:
        out.append("")
        out.append(render_table(
            ["replication slot", "active", "confirmed LSN", "lag (bytes)", "state"],
            [[s.name, "yes" if s.active else "no", s.confirmed_flush_lsn, s.lag_bytes,
              slot_state(s)] for s in report.slots]))
        for s in report.slots:
            note = slot_note(s)
            if note:
                out.append(f"  slot {s.name} {slot_state(s)}: {note}")
        out.append("  (lag: WAL written but not yet confirmed by the connector, i.e. not yet in Kafka)")
    else:
        out.append("no replication slot yet (the connector has not run against this database)")
    if not report.vectorizers:
        out.append("no vectorizers (create one with op.create_vectorizer in a migration)")
    for vz in report.vectorizers:
        out.append("")
        rows = "table dropped" if vz.source_rows is None else f"{vz.source_rows} rows"
        paused = ", paused" if vz.paused else ""
        out.append(f"vectorizer {vz.name}: serving version {vz.serving_version}, {vz.errors} errors"
                   f"{paused}")
        if vz.paused:
            out.append(f"  paused since {jsonable(vz.paused_at)}: nothing is embedded, changes wait"
                       " in Kafka")
            out.append(f"  (resume it with `vectorizer resume {vz.name}`)")
        out.append(f"  source: {vz.source} ({rows})")
        out.append(f"  connector: {vz.connector.describe()}")
        out.append(f"  topic: {vz.topic}")
        for v in vz.versions:
            out.append(f"  version {v.version} store: {v.store}")
            if v.start_error:
                out.append(f"  version {v.version} cannot start: {v.start_error}")
        out.append(render_table(
            ["version", "status", "rows applied", "with chunks", "chunks", "last applied LSN",
             "rows/s", "lag"],
            [[v.version, v.status, v.rows_applied, v.rows_with_chunks, v.chunks,
              v.last_applied_lsn, v.rows_per_s_last_minute, lag_cell(v)]
             for v in vz.versions]))
        for u in vz.usage:  # what the embedding provider was asked for (and bills)
            out.append(f"  version {u.version} usage: {u.tokens:,} tokens in {u.requests:,}"
                       f" requests to {u.provider} {u.model}"
                       + (f", {u.rate_limited:,} rate-limited (429)" if u.rate_limited else ""))
    out.append("\n(rows/s: source rows applied per second over the last minute; lag: events the"
               " version's\n consumer group has not committed yet)")
    if report.kafka is None:
        out.append("(consumer lag: pass --kafka-bootstrap-servers or set KAFKA_BOOTSTRAP_SERVERS;"
                   "\n ~N: as a worker last recorded it)")
    elif report.kafka != "ok":
        out.append(f"({report.kafka})")
    return "\n".join(out)


def lag_cell(version: VersionStatus) -> int | str | None:
    """The consumer lag as measured now, else as a worker last recorded it (``~N``)."""
    if version.consumer_lag is not None or version.pending_recorded is None:
        return version.consumer_lag
    return f"~{version.pending_recorded}"


def slot_state(slot: SlotStatus) -> str:
    """The state cell of a slot: a few words (:func:`slot_note` explains what happens next)."""
    if slot.state == "lost":
        return f"lost ({slot.invalidation_reason or 'invalidated'})"
    text = slot.state
    if slot.state == "recreated":
        text += f" (was {slot.recreated_reason})"
    if slot.resync_tables:
        text += (f", resyncing {slot.resync_tables} table(s):"
                 f" {slot.resync_rows_done}/{slot.resync_rows_total} rows")
    return text


def slot_note(slot: SlotStatus) -> str | None:
    """What the connector does about a slot that is not ``ok``, on a line of its own."""
    if slot.state == "lost":
        return "the connector drops it and resyncs every table"
    if slot.state == "missing":
        return "the connector creates it again and resyncs every table"
    return None


#: ``vectorizer errors --json`` keys: the table's column names (the catalog's ``name``/``pk``).
ERROR_KEYS = {"name": "vectorizer", "pk": "key"}


def error_json(row: dict[str, Any]) -> dict[str, Any]:
    """One error as ``vectorizer errors --json`` prints it: the table's names, JSON values."""
    return {ERROR_KEYS.get(k, k): jsonable(v) for k, v in row.items()}


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
