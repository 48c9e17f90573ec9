"""The initial consistent snapshot of a source table, published as ``read`` events.

How a snapshot meets the stream without a gap, a duplicate state or a regression
----------------------------------------------------------------------------------

A logical slot created with ``SNAPSHOT 'export'`` returns a consistent point ``L`` and a
snapshot that shows exactly the transactions whose commit record lies before ``L``; the slot
decodes exactly those committing at or after ``L``. Reading the table in that snapshot and
streaming the slot therefore covers every change once. Two details decide the LSNs:

1. **Which LSN a ``read`` event carries.** Processors apply, per key, only events above the
   LSN applied so far. A transaction that *began* before ``L`` but commits after it is streamed,
   and its changes carry record LSNs *below* ``L``; had the snapshot's events carried ``L``,
   those changes would be skipped as "older" and the row would stay stale. So ``read`` events
   carry the new slot's ``restart_lsn`` ``R`` (where decoding for it began): the snapshot
   builder only becomes consistent once every transaction running at ``R`` has finished, so
   every transaction the slot streams wrote all its records after ``R``. ``R < `` every
   streamed change, and ``R`` is the same for all rows of a snapshot. ``commit_lsn`` of a
   ``read`` event is ``L``.

2. **A table added while the main slot streams** (a vectorizer created later). An existing slot
   cannot export a snapshot, so the connector creates a *temporary* slot with an exported
   snapshot (consistent point ``L2``, restart point ``R2``), imports the snapshot, drops the
   temporary slot (closing its session) and reads the table at ``L2`` with ``lsn = R2``. The
   main stream is restarted with the table's publication added, from its confirmed position
   ``C``; ``C <= L2`` because the main stream is stopped (everything acknowledged and confirmed)
   before the temporary slot is created. From the main stream the table's changes are then
   published only for transactions with commit LSN ``>= L2`` (``stream_from_lsn``): earlier
   ones are in the snapshot. Result: every change after the snapshot is published, each with an
   LSN above ``R2``, and nothing before it is published twice, so applying events per key in
   LSN order with "skip at or below" goes from the snapshot state forward only.

Resuming after a crash. The keyset position (last acknowledged key) is in
``vectorizer.connector_tables``. The exported snapshot died with the process, so the rest of the
table is read in a new snapshot (temporary slot, ``L3``/``R3``). ``stream_from_lsn`` keeps the
*first* attempt's ``L``: rows already read at ``L`` need every later change, and for the rows
read at ``L3`` the changes committed in ``[L, L3)`` are at worst transient repeats of states the
snapshot already contains; the final state per key is the newest change either way.

Every snapshot is a full resync
-------------------------------

A snapshot of a table that the stores already hold (the slot was dropped or invalidated, the
broker lost the topic, the table or its vectorizers were created again, or a new vectorizer's
consumer group replays a topic that holds events of an earlier incarnation) must also remove
the rows deleted while no change was streamed: no event will ever say so. So every snapshot
ends, once Kafka acknowledged all of its ``read`` events, with a truncate at ``T = R - 1``
(``R`` of its first attempt) on every partition. A processor applying it removes every row it
applied below ``T``; rows the snapshot read carry ``R > T`` and rows streamed after it carry
more, so what is left is exactly the snapshot plus the changes after it.

Why *after* the rows and not before: a truncate first would empty the store, and the ``read``
events would then rebuild it, so searches found nothing for a while and every chunk was
embedded again (a truncate also forgets the rows' chunk hashes). Sent last, the ``read`` events
find each row still in the store: an unchanged row only moves its applied LSN to ``R`` (its
vectors are reused), a changed one is updated, a new one added; the truncate then removes only
the rows no event touched since, the ones the source no longer has. What a user sees meanwhile:
rows deleted while nothing streamed stay searchable until the truncate is applied, then leave;
nothing else disappears. One exception, harmless for the result: a worker far behind on some
partitions may apply the truncate of one partition before the ``read`` events of another, so
rows of the late partition leave and come back (embedded again) as their events arrive; and
the rows whose ``read`` event shares a worker batch with the truncate are embedded again (a
worker applies its batch's truncate first; processors could spare them by exempting the keys
the batch writes from the truncate).

Harmless for a first snapshot: nothing in the stores is below ``T`` except events of an earlier
incarnation in the same topic, which is exactly what must go. A resumed snapshot sends it once,
at the end, still below its first attempt's rows (``connector_tables.truncate_lsn``); a crash
between the truncate and the end of the snapshot sends the same truncate again, a no-op.
A source ``TRUNCATE`` streamed meanwhile has a higher LSN; the resync truncate then changes
nothing.

The snapshot runs in its own thread on its own connections while the main stream goes on.
Chunks are ``chunk_rows`` rows by keyset pagination on the primary key; a chunk's progress is
recorded only after Kafka acknowledged all of its events.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import orjson
import psycopg
from psycopg import sql
from psycopg.types.string import TextLoader

from connector.pgoutput import Type
from connector.publisher import AckGroup, Publisher
from connector.reconcile import FIRST
from connector.state import StateStore
from connector.values import SESSION_OPTIONS, ValueRenderer, describe_types
from pgai_orm.catalog.vectorizers import source_key_names
from pgai_orm.errors import VectorizerError
from pgai_orm.events import Transaction, Truncate, canonical_key, encode_row_change
from pgai_orm.lsn import format_lsn

__all__ = ["SnapshotJob", "SnapshotRunner", "SnapshotSourceError", "TableReader", "import_snapshot"]

logger = logging.getLogger(__name__)
_FIRST_USER_OID = 16384  # FirstNormalObjectId: pgoutput sends a Type message for these


class SnapshotSourceError(VectorizerError, LookupError):
    """The table to snapshot, or one of its key columns, is not in the snapshot."""


def import_snapshot(database_url: str, snapshot_name: str) -> psycopg.Connection[Any]:
    """A connection inside ``REPEATABLE READ, READ ONLY`` that sees ``snapshot_name``.

    The session uses the value settings of the replication stream, so the output functions
    write every value exactly as pgoutput does (:class:`TableReader` reads their text).
    """
    conn = psycopg.connect(database_url, autocommit=True, options=SESSION_OPTIONS)
    try:
        conn.execute("BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        conn.execute(sql.SQL("SET TRANSACTION SNAPSHOT {}").format(sql.Literal(snapshot_name)))
    except BaseException:
        conn.close()
        raise
    return conn


class TableReader:
    """Reads one table in key order, in chunks, as (key, row, key texts) rendered like pgoutput.

    Values are read as the text of their type's output function (text-format results, every
    column loaded as ``str``), which is what pgoutput sends. Not ``::text``: for ``bool``,
    ``bpchar``, ``inet``, ``cidr`` and ``"char"`` that is a cast function writing other text
    (``true`` for ``t``, ``char(n)`` unpadded, ``1.2.3.4/32`` for ``1.2.3.4``), so snapshot and
    stream disagreed (every snapshot bool rendered false). Key values go through the key
    renderer (canonical by value) with the same ``pg_type`` facts as in :mod:`connector.events`.
    """

    def __init__(self, conn: psycopg.Connection[Any], schema: str, table: str, key_columns: Sequence[str]) -> None:
        self.conn = conn
        self.schema = schema
        self.table = table
        self.key_columns = list(key_columns)
        self.renderer = ValueRenderer()
        rows = conn.execute(
            "SELECT a.attname, a.atttypid, t.typname, tn.nspname"
            "  FROM pg_attribute a JOIN pg_type t ON t.oid = a.atttypid"
            "  JOIN pg_namespace tn ON tn.oid = t.typnamespace"
            " WHERE a.attrelid = (SELECT c.oid FROM pg_class c JOIN pg_namespace n"
            "                      ON n.oid = c.relnamespace WHERE n.nspname = %s AND c.relname = %s)"
            "   AND a.attnum > 0 AND NOT a.attisdropped AND a.attgenerated = ''"
            " ORDER BY a.attnum",
            (schema, table),
        ).fetchall()
        if not rows:
            raise SnapshotSourceError(f"table {schema}.{table} not found in the snapshot")
        self.columns: list[tuple[str, int]] = [(r[0], int(r[1])) for r in rows]
        for _name, oid, typname, nspname in rows:
            if oid >= _FIRST_USER_OID:
                self.renderer.register_type(Type(int(oid), nspname, typname))
        names = [c[0] for c in self.columns]
        # keys keep the store's names; a key column renamed since is read under its current
        # name, found by attnum (pgai_orm.catalog.vectorizers.source_key_names)
        self._key_source = list(self.key_columns)
        if any(k not in names for k in self.key_columns):
            current = dict(source_key_names(conn, schema, table))
            self._key_source = [k if k in names else current.get(k) or k for k in self.key_columns]
        missing = [k for k in self._key_source if k not in names]
        if missing:
            raise SnapshotSourceError(f"key columns {missing} not in {schema}.{table}")
        self._key_idx = [names.index(k) for k in self._key_source]
        key_oids = [self.columns[i][1] for i in self._key_idx]
        self.renderer.learn_key_types(key_oids, lambda oids: describe_types(conn, oids))
        self._key_plan = [(i, name, self.renderer.key_renderer_for(self.columns[i][1]))
                          for i, name in zip(self._key_idx, self.key_columns, strict=True)]
        # every result column loads as its text; the OIDs are the ones Postgres reports for the
        # result (a domain column is reported as its base type, so ask rather than assume)
        self._cursor = conn.cursor()
        self._cursor.execute(self._query(False, 0))
        for column in self._cursor.description or ():
            self._cursor.adapters.register_loader(column.type_code, TextLoader)

    def estimate_rows(self) -> int:
        """The planner's row estimate of the table (of a partitioned one, all its partitions).

        Why the planner and not ``pg_class.reltuples``: reltuples is -1 (unknown) until the
        table is first vacuumed or analyzed, so a freshly loaded table, the usual one to get a
        vectorizer, had no total at all; the planner scales what statistics there are to the
        table's current size and estimates from the size alone when there are none. The exact
        number is the snapshot's own count when it finishes (``finish_snapshot``)."""
        row = self.conn.execute(sql.SQL("EXPLAIN (FORMAT JSON) SELECT 1 FROM {}.{}").format(
            sql.Identifier(self.schema), sql.Identifier(self.table))).fetchone()
        plan = row[0] if row else None
        if isinstance(plan, str | bytes):
            plan = orjson.loads(plan)
        try:
            return max(0, int(plan[0]["Plan"]["Plan Rows"]))  # type: ignore[index]
        except (TypeError, KeyError, IndexError, ValueError):
            return 0

    def _query(self, resume: bool, limit: int) -> sql.Composed:
        # Output columns get positional aliases and the table an alias: an ORDER BY on a bare
        # name could otherwise mean an output column of the same name.
        cols = sql.SQL(", ").join(
            sql.SQL("s.{} AS {}").format(sql.Identifier(name), sql.Identifier(f"c{i}"))
            for i, (name, _) in enumerate(self.columns)
        )
        keys = sql.SQL(", ").join(sql.SQL("s.{}").format(sql.Identifier(k)) for k in self._key_source)
        where: sql.Composable = sql.SQL("")
        if resume:
            params = sql.SQL(", ").join(sql.Placeholder() for _ in self._key_source)
            where = sql.SQL(" WHERE ({}) > ({})").format(keys, params)
        return sql.SQL("SELECT {} FROM {}.{} AS s{} ORDER BY {} LIMIT {}").format(
            cols, sql.Identifier(self.schema), sql.Identifier(self.table), where, keys,
            sql.Literal(limit),
        )

    def chunks(
        self, after: list[str | None] | None, chunk_rows: int
    ) -> Iterator[list[tuple[dict[str, Any], dict[str, Any], list[str | None]]]]:
        """Chunks of rows with keys above ``after`` (key values as text), in key order."""
        render = self.renderer.render
        columns = self.columns
        key_idx = self._key_idx
        key_plan = self._key_plan
        cursor = self._cursor
        while True:
            query = self._query(after is not None, chunk_rows)
            rows = cursor.execute(query, after).fetchall()
            if not rows:
                return
            out = []
            for raw in rows:
                row = {name: render(oid, raw[i]) for i, (name, oid) in enumerate(columns)}
                key = {name: key_render(raw[i]) for i, name, key_render in key_plan}
                out.append((key, row, [raw[i] for i in key_idx]))
            after = out[-1][2]
            yield out
            if len(rows) < chunk_rows:
                return


@dataclass(slots=True)
class SnapshotJob:
    """One table to snapshot at a point: ``read_lsn`` (R) and ``commit_lsn`` (L)."""

    schema: str
    table: str
    topic: str
    key_columns: list[str]
    read_lsn: int
    commit_lsn: int
    after: list[str | None] | None = None
    rows_done: int = 0
    rows_total: int | None = None
    #: the truncate sent to every partition once every row is acknowledged (``read_lsn - 1`` of
    #: the first attempt): removes from the stores what the snapshot did not read again; None:
    #: none (a snapshot resumed from a record that predates it)
    truncate_lsn: int | None = None
    reason: str = FIRST  # why it runs (connector.reconcile.REASONS), for logs


class SnapshotRunner(threading.Thread):
    """Publishes the snapshot of ``jobs`` from ``conn`` (already inside the imported snapshot)."""

    def __init__(
        self,
        conn: psycopg.Connection[Any],
        jobs: list[SnapshotJob],
        publisher: Publisher,
        state_url: str,
        slot_name: str,
        *,
        chunk_rows: int = 5000,
        on_progress: Callable[[SnapshotJob, int], None] | None = None,
        source: str | None = None,
    ) -> None:
        super().__init__(name="snapshot", daemon=True)
        self.conn = conn
        self.jobs = jobs
        self.publisher = publisher
        self.state_url = state_url
        self.slot_name = slot_name
        self.chunk_rows = chunk_rows
        self.on_progress = on_progress
        self.source = source  # the catalog instance id, written into every event
        self.error: BaseException | None = None
        self._halt = threading.Event()

    def stop(self, timeout: float = 30.0) -> None:
        """Stop after the chunk in flight and wait (up to ``timeout``) for the thread to end."""
        self._halt.set()
        if self.is_alive():
            self.join(timeout)

    def run(self) -> None:
        try:
            with psycopg.connect(self.state_url, autocommit=True) as state_conn:
                state = StateStore(state_conn, self.slot_name)
                for job in self.jobs:
                    if self._halt.is_set():
                        return
                    self._run_job(job, state)
        except BaseException as exc:  # reported to the main loop, which restarts
            logger.exception("snapshot failed")
            self.error = exc
        finally:
            try:
                self.conn.close()
            except Exception:  # noqa: BLE001 (the connection may be broken already; nothing to report)
                pass

    def _settle(self, job: SnapshotJob, state: StateStore,
                group: AckGroup, after: list[str | None], rows: int) -> None:
        self.publisher.wait(group)
        job.after = after
        job.rows_done += rows
        state.record_progress(job.schema, job.table, after, job.rows_done)
        if self.on_progress:
            self.on_progress(job, rows)

    def _send_truncate(self, job: SnapshotJob, lsn: int) -> None:
        """Processors remove every row applied below ``lsn`` (the first attempt's ``read_lsn - 1``);
        the snapshot's ``read`` events and later streamed changes are above it."""
        truncate = Truncate(lsn, Transaction(job.commit_lsn), job.schema, job.table, self.source)
        group = AckGroup()
        self.publisher.send_truncate(job.topic, truncate, group)
        self.publisher.wait(group)
        logger.info("snapshot of %s.%s (%s): truncate sent at %s, removing rows the snapshot did"
                    " not read", job.schema, job.table, job.reason, format_lsn(lsn))

    def _run_job(self, job: SnapshotJob, state: StateStore) -> None:
        reader = TableReader(self.conn, job.schema, job.table, job.key_columns)
        if job.rows_total is None:
            job.rows_total = reader.estimate_rows()
            state.record_total(job.schema, job.table, job.rows_total)
        txn = Transaction(job.commit_lsn)  # a read event has no commit time or xid
        source = self.source
        start = ("from the first row" if job.after is None
                 else f"resuming after {job.rows_done} rows (key {job.after})")
        logger.info(
            "snapshot of %s.%s (%s) at %s (read lsn %s), about %s rows, %s",
            job.schema, job.table, job.reason, format_lsn(job.commit_lsn), format_lsn(job.read_lsn),
            "?" if job.rows_total is None else job.rows_total, start,
        )
        # One chunk in flight while the next is read and sent: a chunk's progress is recorded
        # once Kafka acknowledged it, and always after the chunk before it.
        in_flight: tuple[AckGroup, list[str | None], int] | None = None
        for chunk in reader.chunks(job.after, self.chunk_rows):
            if self._halt.is_set():
                return
            group = AckGroup()
            for key, row, _texts in chunk:
                value = encode_row_change("read", job.read_lsn, txn, job.schema, job.table, key, row,
                                          source=source)
                self.publisher.send_grouped(job.topic, canonical_key(key), value, group)
            self.publisher.drain()
            if in_flight is not None:
                self._settle(job, state, *in_flight)
            in_flight = (group, chunk[-1][2], len(chunk))
        if in_flight is not None:
            self._settle(job, state, *in_flight)
        if self._halt.is_set():
            return
        if job.truncate_lsn is not None:  # after every row: see "Every snapshot is a full resync"
            self._send_truncate(job, job.truncate_lsn)
        state.finish_snapshot(job.schema, job.table)
        job.rows_total = job.rows_done  # exact now
        if self.on_progress:
            self.on_progress(job, 0)
        logger.info("snapshot of %s.%s done: %d rows", job.schema, job.table, job.rows_done)
