"""``vectorizer status``, ``vectorizer errors`` and ``vectorizer replay``: the operator's view.

Everything here is read from the places the pipeline itself keeps its truth, so the numbers
cannot drift from what the services do: the catalog (``vectorizer.*`` tables), the embedding
stores, ``pg_replication_slots`` (WAL the connector has not confirmed yet) and, when a broker
is given, the consumer groups' committed offsets against the topics' high-water marks.

``replay`` re-embeds a vectorizer from its topic without touching the source table: it makes a
new config version identical to the current one through ``vectorizer.alter_vectorizer`` (a
patch that names the content-defining parts always makes a new version), so the workers start
a fresh consumer group that reads the compacted topic from offset 0 into a fresh store, and
switch queries to it once it caught up. The current store keeps serving meanwhile.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import click
import psycopg
from psycopg import sql

from infra.logs import scrub
from infra.stack import STATE_DIR_ENV, EmbeddedStack
from infra.urls import libpq_url
from pgai_orm.catalog import catalog_exists
from pgai_orm.names import SLOT_PREFIX
from pgai_orm.configuration import VectorizerConfig

#: The parts of a config whose change means "re-embed" (``alter_vectorizer`` makes a version).
CONTENT_KEYS = ("embedding", "chunking", "formatting", "loading")


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
    connector: str = "not seen by a connector yet"  # or "streaming", "snapshotting 10/99 rows"


@dataclass
class SlotStatus:
    """A connector slot: ``lag_bytes`` of WAL written but not yet confirmed (= not in Kafka)."""

    name: str
    active: bool
    confirmed_flush_lsn: str | None
    lag_bytes: int | None


@dataclass
class Report:
    """Everything ``vectorizer status`` shows."""

    database: str
    slots: list[SlotStatus]
    vectorizers: list[VectorizerStatus]
    kafka: str | None  # None: no broker given; otherwise "ok" or why lags are missing


# -- reading -----------------------------------------------------------------------------------

def _count(conn: psycopg.Connection, schema: str, table: str) -> int:
    query = sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(schema, table))
    row = conn.execute(query).fetchone()
    return int(row[0]) if row else 0


def _table_exists(conn: psycopg.Connection, schema: str, table: str) -> bool:
    row = conn.execute("SELECT to_regclass(format('%%I.%%I', %s::text, %s::text)) IS NOT NULL",
                       (schema, table)).fetchone()
    return bool(row and row[0])


def read_slots(conn: psycopg.Connection) -> list[SlotStatus]:
    """The connector's logical slots in this database, with unconfirmed WAL in bytes."""
    rows = conn.execute(
        "SELECT slot_name, active, confirmed_flush_lsn::text,"
        "       pg_wal_lsn_diff(pg_current_wal_lsn(), confirmed_flush_lsn)::bigint"
        "  FROM pg_replication_slots"
        " WHERE slot_type = 'logical' AND database = current_database() AND slot_name LIKE %s"
        " ORDER BY slot_name",
        (SLOT_PREFIX + "%",),
    ).fetchall()
    return [SlotStatus(r[0], bool(r[1]), r[2], None if r[3] is None else int(r[3])) for r in rows]


def _versions(conn: psycopg.Connection, vectorizer_id: int) -> list[VersionStatus]:
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
        chunks = _count(conn, schema, table) if _table_exists(conn, schema, table) else int(hashed_chunks)
        versions.append(VersionStatus(int(version), status, f"{schema}.{table}", int(applied),
                                      int(with_chunks), chunks, lsn, round(int(recent) / 60, 2)))
    return versions


def read_report(database_url: str) -> Report:
    """The catalog, stores and slots of ``database_url`` (no broker needed)."""
    with psycopg.connect(libpq_url(database_url), autocommit=True) as conn:
        database = str(conn.execute("SELECT current_database()").fetchone()[0])  # type: ignore[index]
        slots = read_slots(conn)
        if not catalog_exists(conn):
            return Report(database, slots, [], None)
        rows = conn.execute(
            "SELECT v.id, v.name, v.source_schema, v.source_table, v.config_version,"
            "       (SELECT count(*) FROM vectorizer.errors e WHERE e.vectorizer_id = v.id)"
            "  FROM vectorizer.vectorizers v ORDER BY v.id"
        ).fetchall()
        vectorizers = []
        for vid, name, schema, table, serving, errors in rows:
            source_rows = _count(conn, schema, table) if _table_exists(conn, schema, table) else None
            status = VectorizerStatus(name, f"{schema}.{table}", source_rows, int(serving),
                                      int(errors), _versions(conn, int(vid)))
            status.topic = _topic(database, schema, table)
            for version in status.versions:
                version.consumer_group = _group(database, int(vid), version.version)
            vectorizers.append(status)
    _add_connector_progress(database_url, slots, vectorizers)
    return Report(database, slots, vectorizers, None)


def _add_connector_progress(database_url: str, slots: list[SlotStatus],
                            vectorizers: list[VectorizerStatus]) -> None:
    """The connector's per-table phase (initial snapshot with progress, or streaming)."""
    from connector.service import status as connector_status

    for slot in slots:
        tables = connector_status(libpq_url(database_url), slot.name).get("tables", [])
        for table in tables:
            source = f"{table['schema']}.{table['table']}"
            if table["status"] == "streaming":
                phase = "streaming"
            else:
                total = table.get("snapshot_rows_total")
                phase = f"snapshotting {table.get('snapshot_rows', 0)}/{total if total is not None else '?'} rows"
            for vz in vectorizers:
                if vz.source == source:
                    vz.connector = f"{phase} (slot {slot.name})"


def _topic(database: str, schema: str, table: str, prefix: str = "vectorizer") -> str:
    from processors.app import topic_name

    return topic_name(prefix, database, schema, table)


def _group(database: str, vectorizer_id: int, version: int, prefix: str = "vectorizer") -> str:
    from processors.app import group_id

    return group_id(prefix, database, vectorizer_id, version)


async def _consumer_lags(report: Report, bootstrap_servers: str) -> None:
    from processors.app import committed_offsets, fetch_high_watermarks

    for vz in report.vectorizers:
        assert vz.topic is not None
        marks = await fetch_high_watermarks(bootstrap_servers, vz.topic, timeout=5.0)
        for version in vz.versions:
            if marks is None:  # no topic yet: the connector has published nothing
                version.consumer_lag = 0
                continue
            assert version.consumer_group is not None
            committed = await committed_offsets(bootstrap_servers, version.consumer_group, vz.topic)
            version.consumer_lag = sum(max(0, hw - committed.get(p, 0)) for p, hw in marks.items())


def add_consumer_lags(report: Report, bootstrap_servers: str, timeout: float = 20.0) -> None:
    """Fill ``consumer_lag`` per version; on broker trouble say why in ``report.kafka``."""
    try:
        asyncio.run(asyncio.wait_for(_consumer_lags(report, bootstrap_servers), timeout))
        report.kafka = "ok"
    except Exception as exc:  # any broker failure only costs the lag column, never the report
        report.kafka = f"consumer lag unavailable ({type(exc).__name__}: {exc})"


def read_errors(database_url: str, name: str | None, limit: int) -> list[dict[str, Any]]:
    """The newest ``limit`` rows of ``vectorizer.errors`` (of one vectorizer when named)."""
    with psycopg.connect(libpq_url(database_url), autocommit=True) as conn:
        if not catalog_exists(conn):
            return []
        if name is not None and conn.execute(
                "SELECT 1 FROM vectorizer.vectorizers WHERE name = %s", (name,)).fetchone() is None:
            raise click.ClickException(f"vectorizer {name!r} does not exist")
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


# -- replay --------------------------------------------------------------------------------------

@dataclass(frozen=True)
class ReplayStarted:
    name: str
    from_version: int
    version: int
    store: str


def start_replay(database_url: str, name: str) -> ReplayStarted:
    """Make a new config version identical to the serving one; the workers replay into it.

    ``vectorizer.alter_vectorizer`` merges the patch into the newest version's config and, when
    the patch names a content key, always creates a fresh version and store (superseding a
    version still building). The patch carries the serving version's content keys, so the new
    version embeds exactly what the serving one does.
    """
    with psycopg.connect(libpq_url(database_url)) as conn:
        if not catalog_exists(conn):
            raise click.ClickException("no vectorizer catalog in this database")
        row = conn.execute(
            "SELECT v.config_version, cv.config FROM vectorizer.vectorizers v"
            "  JOIN vectorizer.config_versions cv"
            "    ON cv.vectorizer_id = v.id AND cv.version = v.config_version"
            " WHERE v.name = %s FOR UPDATE OF v",
            (name,),
        ).fetchone()
        if row is None:
            raise click.ClickException(f"vectorizer {name!r} does not exist")
        serving, config = int(row[0]), row[1]
        parsed = VectorizerConfig.from_dict(config)
        patch = {key: config.get(key) for key in CONTENT_KEYS}
        placeholders = sorted(getattr(parsed.formatting, "placeholders", ()) or ())
        new_version = conn.execute(
            "SELECT vectorizer.alter_vectorizer(%s, %s::jsonb, %s, %s::text[], %s)",
            (name, json.dumps(patch), parsed.source_column, placeholders,
             parsed.embedding.dimensions),
        ).fetchone()[0]  # type: ignore[index]
        store = conn.execute(
            "SELECT target_schema || '.' || target_table FROM vectorizer.config_versions"
            " WHERE vectorizer_id = (SELECT id FROM vectorizer.vectorizers WHERE name = %s)"
            "   AND version = %s",
            (name, new_version),
        ).fetchone()[0]  # type: ignore[index]
        conn.commit()
    return ReplayStarted(name, serving, int(new_version), str(store))


def wait_for_activation(database_url: str, name: str, version: int, timeout: float) -> bool:
    """Poll the catalog until ``version`` serves queries (True) or ``timeout`` passes (False)."""
    deadline = time.monotonic() + timeout
    with psycopg.connect(libpq_url(database_url), autocommit=True) as conn:
        while True:
            row = conn.execute("SELECT config_version FROM vectorizer.vectorizers WHERE name = %s",
                               (name,)).fetchone()
            if row is not None and int(row[0]) == version:
                return True
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.25)


# -- rendering ----------------------------------------------------------------------------------

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
            ["replication slot", "active", "confirmed LSN", "WAL not yet in Kafka (bytes)"],
            [[s.name, "yes" if s.active else "no", s.confirmed_flush_lsn, s.lag_bytes]
             for s in report.slots]))
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


# -- commands -----------------------------------------------------------------------------------

def _resolve_database_url(database_url: str | None, state_dir: Path | None) -> str:
    """``--database-url``/``$DATABASE_URL``, else the running embedded dev stack's database."""
    if database_url:
        return database_url
    stack = EmbeddedStack(state_dir)
    if not stack.is_running():
        raise click.ClickException(
            "no database: pass --database-url, set DATABASE_URL, or start `vectorizer dev up`")
    return stack.info().database_url


@contextlib.contextmanager
def _database_errors(url: str) -> Iterator[None]:
    """An unreachable database is a one-line error naming it (password hidden), not a traceback."""
    try:
        yield
    except psycopg.OperationalError as exc:
        reason = " ".join(str(exc).split())
        raise click.ClickException(f"cannot reach the database {scrub(url)}: {scrub(reason)}") from None


def _database_options(func: Any) -> Any:
    func = click.option("--state-dir", type=click.Path(file_okay=False, path_type=Path),
                        envvar=STATE_DIR_ENV, default=None,
                        help="Dev stack to ask when no database URL is given.")(func)
    return click.option("--database-url", envvar="DATABASE_URL", default=None,
                        help="PostgreSQL URL of the database holding the vectorizers "
                             "[env DATABASE_URL; default: the running dev stack].")(func)


def _jsonable(value: Any) -> Any:
    return value.isoformat() if hasattr(value, "isoformat") else value


@click.command(name="status")
@_database_options
@click.option("--kafka-bootstrap-servers", "bootstrap_servers", envvar="KAFKA_BOOTSTRAP_SERVERS",
              default=None, help="Broker, to measure consumer lag [env KAFKA_BOOTSTRAP_SERVERS].")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object instead of tables.")
def status_command(database_url: str | None, state_dir: Path | None, bootstrap_servers: str | None,
                   as_json: bool) -> None:
    """Per vectorizer: source rows, chunks stored, pending work (slot and consumer lag), errors."""
    url = _resolve_database_url(database_url, state_dir)
    if bootstrap_servers is None and not database_url:
        stack = EmbeddedStack(state_dir)
        bootstrap_servers = stack.info().kafka_bootstrap_servers if stack.is_running() else None
    with _database_errors(url):
        report = read_report(url)
    if bootstrap_servers:
        add_consumer_lags(report, bootstrap_servers)
    if as_json:
        click.echo(json.dumps(asdict(report), indent=2, default=_jsonable))
    else:
        click.echo(render_report(report))


@click.command(name="errors")
@click.argument("name", required=False)
@_database_options
@click.option("--limit", type=click.IntRange(min=1), default=50, show_default=True,
              help="Newest errors to show.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON lines instead of a table.")
def errors_command(name: str | None, database_url: str | None, state_dir: Path | None, limit: int,
                   as_json: bool) -> None:
    """List the rows the pipeline could not embed (newest first), of all vectorizers or NAME."""
    url = _resolve_database_url(database_url, state_dir)
    with _database_errors(url):
        rows = read_errors(url, name, limit)
    if as_json:
        for row in rows:
            click.echo(json.dumps({k: _jsonable(v) for k, v in row.items()}))
        return
    if not rows:
        click.echo("no errors recorded")
        return
    click.echo(render_table(
        ["id", "vectorizer", "version", "key", "step", "message", "lsn", "recorded at"],
        [[r["id"], r["name"], r["version"], json.dumps(r["pk"]), r["step"],
          _one_line(r["message"]), r["lsn"], _jsonable(r["recorded_at"])] for r in rows]))


def _one_line(text: str, width: int = 80) -> str:
    flat = " ".join(str(text).split())
    return flat if len(flat) <= width else flat[: width - 1] + "…"


@click.command(name="replay")
@click.argument("name")
@_database_options
@click.option("--wait/--no-wait", default=False,
              help="Wait until the workers caught up and the new version serves queries.")
@click.option("--timeout", type=float, default=600.0, show_default=True,
              help="Seconds to wait with --wait.")
def replay_command(name: str, database_url: str | None, state_dir: Path | None, wait: bool,
                   timeout: float) -> None:
    """Re-embed vectorizer NAME from its Kafka topic into a fresh store, then switch to it.

    The source table is not read; the current store keeps serving queries until the switch.
    """
    url = _resolve_database_url(database_url, state_dir)
    with _database_errors(url):
        started = start_replay(url, name)
    click.echo(f"vectorizer {name}: version {started.version} (same config as version "
               f"{started.from_version}) is building into {started.store}; running workers "
               "replay the topic from the start and switch queries to it once caught up.")
    if not wait:
        click.echo("follow it with `vectorizer status`")
        return
    begun = time.monotonic()
    if not wait_for_activation(url, name, started.version, timeout):
        raise click.ClickException(
            f"version {started.version} did not catch up within {timeout:.0f}s "
            "(are `vectorizer connector` and `vectorizer worker` running?)")
    click.echo(f"version {started.version} serves queries now ({time.monotonic() - begun:.1f}s)")


#: What ``infra.cli`` registers under ``vectorizer``.
COMMANDS = (status_command, errors_command, replay_command)
