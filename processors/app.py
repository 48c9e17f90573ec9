"""The faust app of one vectorizer config version: one consumer group, one agent, one store.

Why one app per config version: faust gives every agent of an app the app's single consumer
group, but each config version needs its *own* group (``<prefix>-<database>-<id>-v<n>``, see
:func:`pgai_orm.names.consumer_group`) so that a new version can replay the topic from offset 0
while the active one keeps its place. A worker process runs the apps of every served version on
one event loop (``processors.engine``) and adds or removes apps as the catalog changes; faust
cannot add agents with new consumer groups to a running app.

Offsets are committed only after the store commit. ``stream.take()`` acks its buffer in a
``finally`` (so also when the agent is cancelled or fails in the middle of a batch), which would
let faust commit events that never reached the store. The agent uses ``stream.noack_take()``
and acks each event itself after the batch's transaction committed. faust never auto-commits
(it runs aiokafka with ``enable_auto_commit=False`` and commits only acked offsets), and
``stream_wait_empty=True`` makes a rebalance or shutdown wait until the batch in flight is
stored and acked before the last commit, so a partition moves to another worker at a
committed position that matches the store. Anything redelivered after a crash is skipped by
the applied-LSN check, so at-least-once delivery never duplicates chunks.

Throughput: the agent embeds batch N+1 (on a second connection) while batch N commits; commits
run one at a time in batch order and each acks its own events once committed. A row changed
by batch N and planned for N+1 before N committed is noticed under the row lock and planned
again, so the overlap never writes a plan made on stale state.
"""

from __future__ import annotations

import asyncio
import logging
import os
import tempfile
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import faust
import psycopg
from psycopg import AsyncConnection

from pgai_orm.catalog.versions import (
    ACTIVATE_VERSION_SQL,
    SET_REPLAY_TARGET_SQL,
    VERSION_PROGRESS_SQL,
    load_version_source,
    replay_target_json,
)
from pgai_orm.errors import InvariantError, VectorizerError
from pgai_orm.events import Event, EventFormatError, RowChange, decode_event
from pgai_orm.lsn import format_lsn
from pgai_orm.names import DEFAULT_TOPIC_PREFIX, consumer_group, dlq_topic, topic_name
from processors.errors_sink import ErrorSink, RowError
from processors.faust_transport import TableManager, broker_urls
from processors.metrics import WorkerMetrics, metrics_enabled
from processors.offsets import committed_offsets, fetch_high_watermarks
from processors.pipeline import (
    RETRYABLE_DB_ERRORS,
    BatchReport,
    Pipeline,
    PlannedBatch,
    PreparedBatch,
    VersionSpec,
)
from processors.store import StalePlanError
from processors.stream_batches import quiet_batches

logger = logging.getLogger(__name__)
T = TypeVar("T")

#: A batch failing this often with an unexpected error is applied in halves (see isolate).
MAX_BATCH_FAILURES = 3
#: Exit status when not even an error row can be written (see _skip_unappliable).
EXIT_BATCH_FAILED = 70


#: after the first, every this many events of another catalog instance log a warning again
FOREIGN_WARN_EVERY = 1000


class BatchFailedError(VectorizerError):
    """A batch step failed :data:`MAX_BATCH_FAILURES` times with an unexpected error."""

    def __init__(self, what: str, attempts: int) -> None:
        super().__init__(f"batch {what} failed {attempts} times")
        self.what = what
        self.attempts = attempts

    @property
    def cause_name(self) -> str:
        return type(self.__cause__).__name__ if self.__cause__ else "unknown"

    @property
    def cause_text(self) -> str:
        cause = self.__cause__
        return f"{type(cause).__name__}: {cause}" if cause else "unknown error"


@dataclass(frozen=True, slots=True)
class WorkerSettings:
    """Runtime settings of a processor worker. Defaults suit production Kafka; tests shorten
    the session timeout (the embedded broker takes half of it to complete a group join)."""

    database_url: str
    bootstrap_servers: str
    topic_prefix: str = DEFAULT_TOPIC_PREFIX
    batch_size: int = 256
    batch_within: float = 1.0
    session_timeout: float = 30.0
    commit_interval: float = 1.0
    activation_interval: float = 2.0
    web_port: int | None = None
    embedding_concurrency: int | None = None
    #: seconds one provider request may take before it counts as a (retried) timeout
    embedding_timeout: float | None = None


def load_spec(database_url: str, vectorizer_id: int, version: int, prefix: str) -> tuple[VersionSpec, str]:
    """Read one config version from the catalog; return it with its source topic."""
    with psycopg.connect(database_url, autocommit=True) as conn:
        source = load_version_source(conn, vectorizer_id, version)
    if source is None:
        raise LookupError(f"vectorizer {vectorizer_id} has no config version {version}")
    spec = VersionSpec(vectorizer_id, version, source.source_schema, source.source_table,
                       source.pk_columns, source.config,
                       consumer_group(prefix, source.database, vectorizer_id, version),
                       source.name)
    return spec, topic_name(prefix, source.database, source.source_schema, source.source_table)


class VersionRunner:
    """Everything the agent needs besides faust: a DB connection, the pipeline, counters."""

    def __init__(self, spec: VersionSpec, topic: str, settings: WorkerSettings,
                 dlq: faust.types.TopicT | None, *, build_pipeline: bool = True) -> None:
        self.spec = spec
        self.topic = topic
        self.settings = settings
        self.totals = BatchReport()
        self.metrics = WorkerMetrics.of(spec.vectorizer_id, spec.version, spec.name)
        self._dlq = dlq
        self._conn: AsyncConnection[Any] | None = None
        self._read_conn: AsyncConnection[Any] | None = None
        self._settled = False
        #: the catalog instance id of this runner's database (loaded with the first batch);
        #: events whose ``source`` differs come from another incarnation or server
        self.instance: str | None = None
        self._instance_loaded = False
        self.foreign_events = 0
        self.errors = ErrorSink(spec.vectorizer_id, spec.version, self._publish if dlq else None)
        self._pipeline: Pipeline | None = None
        self._built = asyncio.Event()
        if build_pipeline:
            self._set_pipeline(self._new_pipeline())

    def _new_pipeline(self) -> Pipeline:
        options: dict[str, Any] = {}
        if self.settings.embedding_concurrency is not None:
            options["concurrency"] = self.settings.embedding_concurrency
        if self.settings.embedding_timeout is not None:
            options["timeout"] = self.settings.embedding_timeout
        pipeline = Pipeline.from_spec(self.spec, self.errors, **options)
        pipeline.embedder.warm()  # what the first batch would load (a tokenizer), now
        return pipeline

    def _set_pipeline(self, pipeline: Pipeline) -> None:
        self._pipeline = pipeline
        self._built.set()

    async def build(self) -> None:
        """Build the pipeline (embedder, model, tokenizer) in a thread.

        The engine runs this while the app joins its consumer group, which is mostly waiting
        on the broker: the imports and model loading then cost no start-up time. It raises
        what building raises (no API key, a missing extra): the version cannot start.
        """
        self._set_pipeline(await asyncio.to_thread(self._new_pipeline))

    @property
    def pipeline(self) -> Pipeline:
        if self._pipeline is None:
            raise InvariantError(f"{self.spec.group_id}: the pipeline is used before it is built")
        return self._pipeline

    async def _publish(self, key: bytes, value: bytes) -> None:
        if self._dlq is None:
            raise InvariantError("dead-letter publish without a dead-letter topic")
        delivery = await self._dlq.send(key=key, value=value)
        await delivery  # returns once the broker acknowledged the record

    async def connection(self) -> AsyncConnection[Any]:
        """The connection batches commit on."""
        if self._conn is None or self._conn.closed:
            self._conn = await AsyncConnection.connect(self.settings.database_url, autocommit=True)
        return self._conn

    async def _read_connection(self) -> AsyncConnection[Any]:
        """The connection the next batch is prepared on while the previous one commits."""
        if self._read_conn is None or self._read_conn.closed:
            self._read_conn = await AsyncConnection.connect(self.settings.database_url,
                                                            autocommit=True)
        return self._read_conn

    async def _close_write(self) -> None:
        if self._conn is not None:
            await self._conn.close()
            self._conn = None

    async def _close_read(self) -> None:
        if self._read_conn is not None:
            await self._read_conn.close()
            self._read_conn = None

    async def close(self) -> None:
        await self._close_read()
        await self._close_write()

    async def handle(self, values: list[bytes | None], keys: list[bytes | None]) -> BatchReport:
        """Apply one batch (prepare, then commit); a batch that keeps failing is isolated."""
        try:
            return await self.commit_batch(await self.prepare_batch(values, keys))
        except BatchFailedError as exc:
            await self.isolate(values, keys, exc)
            return BatchReport()

    async def isolate(self, values: list[bytes | None], keys: list[bytes | None],
                      failure: BatchFailedError) -> None:
        """Apply a batch that failed :data:`MAX_BATCH_FAILURES` times in halves, until the
        records that cannot be applied stand alone; each of those is recorded (errors table and
        DLQ) and skipped, so one row never stops the vectorizer.

        Halves are applied in order, so the changes of one key still reach the store in commit
        order (the LSN guard skips anything older). A skipped change leaves its row as the store
        had it; ``vectorizer status`` counts the error until a later change of the row applies.
        """
        if len(values) <= 1:
            if values:
                await self._skip_unappliable(values[0], keys[0], failure)
            return
        middle = len(values) // 2
        logger.warning("%s: a batch of %d events failed %d times (%s); applying it in halves",
                       self.spec.group_id, len(values), failure.attempts, failure.cause_text)
        for part_values, part_keys in ((values[:middle], keys[:middle]),
                                       (values[middle:], keys[middle:])):
            try:
                await self.commit_batch(await self.prepare_batch(part_values, part_keys))
            except BatchFailedError as exc:
                await self.isolate(part_values, part_keys, exc)

    async def _skip_unappliable(self, value: bytes | None, key: bytes | None,
                                failure: BatchFailedError) -> None:
        try:
            event = decode_event(value)
        except EventFormatError:  # malformed events never fail a batch; be safe anyway
            event = None
        if isinstance(event, RowChange):
            key_json, lsn = event.key_json, event.lsn
        else:  # a truncate (or a record without an event): no row key to name
            key_json = "null" if key is None else key.decode("utf-8", "replace")
            lsn = event.lsn if event is not None else 0
        error = RowError(
            key_json, lsn, "store",
            f"this change could not be applied ({failure.cause_text}; {failure.attempts} attempts"
            f" at {failure.what}); it was skipped and the pipeline goes on: fix the cause, then"
            " update the row or run `vectorizer replay` to apply it again",
            {"error": failure.cause_name})
        logger.error("%s: skipping the change of %s at lsn %s: %s", self.spec.group_id,
                     key_json, format_lsn(lsn), failure.cause_text)
        await self.errors.publish([error])

        async def record(conn: AsyncConnection[Any]) -> None:
            async with conn.transaction():
                await self.errors.record(conn, [error])

        try:
            await self._retrying("record", self.connection, self._close_write, record)
        except BatchFailedError:
            # Not even an error row can be written: the database refuses this version's writes
            # for a reason no row explains. Exit with nothing acked; a restart (or another
            # worker) resumes at the last committed offset.
            logger.critical("%s: cannot record errors either; exiting", self.spec.group_id)
            logging.shutdown()
            os._exit(EXIT_BATCH_FAILED)
        self.metrics.errors(["store"])
        self.metrics.events_consumed.inc(1)

    async def _load_instance(self, conn: AsyncConnection[Any]) -> None:
        """Read the catalog instance id of the database (None on a catalog without one)."""
        cur = await conn.execute("SELECT to_regclass('vectorizer.instance') IS NOT NULL")
        row = await cur.fetchone()
        if row and row[0]:
            cur = await conn.execute("SELECT id::text FROM vectorizer.instance")
            row = await cur.fetchone()
            self.instance = None if row is None else str(row[0])
        self._instance_loaded = True

    def _foreign(self, event: Event) -> None:
        """Count an event of another catalog instance, warning the first time and every 1000th."""
        self.foreign_events += 1
        self.metrics.events_skipped_foreign.inc()
        if self.foreign_events % FOREIGN_WARN_EVERY == 1:
            logger.warning(
                "%s: skipping events of topic %s written by catalog instance %s, not by this"
                " database's (%s; %d such events so far): events of an earlier incarnation of this"
                " database (it was dropped and re-created), or of another Postgres server writing"
                " to the same topic: give each server its own --topic-prefix",
                self.spec.group_id, self.topic, event.source, self.instance, self.foreign_events)

    async def prepare_batch(self, values: list[bytes | None], keys: list[bytes | None]) -> PreparedBatch:
        """Parse, plan and embed a batch (:meth:`plan_batch`, then :meth:`embed_batch`)."""
        return await self.embed_batch(await self.plan_batch(values, keys))

    async def plan_batch(self, values: list[bytes | None], keys: list[bytes | None]) -> PlannedBatch:
        """Parse and plan a batch on the read connection (may overlap an embedding and a commit).

        Events of another catalog instance (``source`` set and not this database's) are dropped
        before planning: acked with the batch, never applied, not recorded as errors."""
        await self._built.wait()  # the engine builds the pipeline while the group joins
        if not self._instance_loaded:
            await self._retrying("prepare", self._read_connection, self._close_read,
                                 self._load_instance)
        instance = self.instance
        events: list[Event | None] = []
        bad: list[RowError] = []
        foreign = 0
        for key, value in zip(keys, values, strict=True):
            try:
                event = decode_event(value)
            except EventFormatError as exc:
                logger.error("skipping a malformed event: %s", exc)
                bad.append(RowError((key or b"null").decode("utf-8", "replace"), 0, "load", str(exc)))
                continue
            if (event is not None and instance is not None and event.source is not None
                    and event.source != instance):
                self._foreign(event)
                foreign += 1
                continue
            events.append(event)
        if foreign:
            self.metrics.events_consumed.inc(foreign)
        if bad:
            await self.errors.publish(bad)
        planned = await self._retrying("prepare", self._read_connection, self._close_read,
                                       lambda conn: self.pipeline.plan(conn, events))
        self.metrics.errors([e.step for e in bad])
        self.metrics.events_consumed.inc(len(bad))  # malformed: consumed, recorded as errors
        return planned

    async def embed_batch(self, planned: PlannedBatch) -> PreparedBatch:
        """Embed a planned batch, retried like the other steps. It needs no database
        connection, so it neither waits for one nor resets the read connection, on which the
        next batch may be planning at the same time."""
        prepared = await self._attempts("embed", lambda: self.pipeline.embed(planned))
        self._count_embedding(prepared.report)
        self.metrics.errors([e.step for e in prepared.errors])
        return prepared

    @property
    def batches_in_flight(self) -> int:
        """Batches this version may have embedding at once (its embedder's kind says how many)."""
        return max(1, self.pipeline.embedder.batches_in_flight)

    def _count_embedding(self, report: BatchReport) -> None:
        """Chunks, calls, tokens and requests of one batch's embedding into the metrics."""
        self.metrics.embedded(report.chunks_embedded, report.embedding_calls)
        self.metrics.embedding_usage(self.pipeline.embedder.provider, self.pipeline.model_name,
                                     tokens=report.tokens, requests=report.requests,
                                     rate_limited=report.rate_limited)

    async def commit_batch(self, prepared: PreparedBatch, partitions: Sequence[int] = ()) -> BatchReport:
        """Commit a prepared batch; plans that went stale meanwhile are made again."""
        redone: list[BatchReport] = []

        async def commit(conn: AsyncConnection[Any]) -> BatchReport:
            try:
                return await self.pipeline.commit(conn, prepared)
            except StalePlanError as exc:  # the previous batch changed some of these rows
                logger.info("%s: batch plan went stale (%s); planning it again",
                            self.spec.group_id, exc)
                report = await self.pipeline.process(conn, prepared.events)
                redone.append(report)
                return report

        started = time.monotonic()
        report = await self._retrying("commit", self.connection, self._close_write, commit)
        lsns = [c.lsn for c in prepared.batch.changes]
        if prepared.batch.truncate_lsn is not None:
            lsns.append(prepared.batch.truncate_lsn)
        lsn = max(lsns) if lsns and not report.inactive else None
        for again in redone:  # embedding work of the batch planned again
            self._count_embedding(again)
        self.metrics.committed(events=prepared.report.events, skipped=report.skipped,
                               rows=report.rows_written, reused=report.chunks_reused,
                               seconds=time.monotonic() - started, lsn=lsn)
        self.totals.add(report)
        logger.info(
            "batch %s: events=%d changes=%d skipped=%d rows=%d embedded=%d reused=%d calls=%d"
            " rereads=%d errors=%d | totals embedded=%d calls=%d",
            self.spec.group_id, report.events, report.changes, report.skipped,
            report.rows_written, report.chunks_embedded, report.chunks_reused,
            report.embedding_calls, report.rereads, report.errors, self.totals.chunks_embedded,
            self.totals.embedding_calls,
            extra={"vectorizer": self.spec.vectorizer_id, "version": self.spec.version,
                   "partitions": sorted(set(partitions)), "lsn": lsn,
                   "events": report.events, "rows": report.rows_written,
                   "embedded": report.chunks_embedded, "errors": report.errors},
        )
        return report

    async def _retrying(self, what: str, connect: Callable[[], Awaitable[AsyncConnection[Any]]],
                        reset: Callable[[], Awaitable[None]],
                        step: Callable[[AsyncConnection[Any]], Awaitable[T]]) -> T:
        """Run ``step`` on the connection until it succeeds; database outages are waited out
        (the connection is reset in between), bugs end the process."""

        async def on_connection() -> T:
            return await step(await connect())

        return await self._attempts(what, on_connection, reset)

    async def _attempts(self, what: str, attempt: Callable[[], Awaitable[T]],
                        reset: Callable[[], Awaitable[None]] | None = None) -> T:
        """Run ``attempt`` until it succeeds, with backoff: database outages are waited out, and
        after ``MAX_BATCH_FAILURES`` other failures :class:`BatchFailedError` says the batch cannot
        be done. ``reset`` runs before each retry."""
        delay = 0.2
        failures = 0
        while True:
            try:
                return await attempt()
            except RETRYABLE_DB_ERRORS as exc:
                logger.warning("store unavailable during %s (%s: %s); retrying in %.1fs",
                               what, type(exc).__name__, exc, delay)
            except Exception as exc:
                failures += 1
                logger.exception("batch %s failed (%d/%d)", what, failures, MAX_BATCH_FAILURES)
                if failures >= MAX_BATCH_FAILURES:
                    raise BatchFailedError(what, failures) from exc
            if reset is not None:
                await reset()
            await asyncio.sleep(delay)
            delay = min(delay * 2, 30.0)

    # -- re-embedding: activation of a building version ----------------------------------------

    async def check_caught_up(self) -> bool:
        """Activate this building version once its group consumed the replay target.

        The target is the topic's high-water marks as first observed for this version (stored
        in ``config_versions.replay_target`` so every worker uses the same one). High-water
        marks come from fetch responses: the embedded broker's ListOffsets("latest") is wrong.
        """
        if self._settled:
            return False
        # its own connection: the agent's may be inside a batch transaction right now
        async with await AsyncConnection.connect(self.settings.database_url, autocommit=True) as conn:
            return await self._check_caught_up(conn)

    async def _check_caught_up(self, conn: AsyncConnection[Any]) -> bool:
        cur = await conn.execute(VERSION_PROGRESS_SQL, (self.spec.vectorizer_id, self.spec.version))
        row = await cur.fetchone()
        if row is None or row[0] != "building":
            self._settled = True  # active or retired versions never build again
            return False
        target = row[1]
        if target is None:
            marks = await fetch_high_watermarks(self.settings.bootstrap_servers, self.topic)
            if marks is None:
                return False
            await conn.execute(SET_REPLAY_TARGET_SQL, (replay_target_json(marks),
                                                       self.spec.vectorizer_id, self.spec.version))
            return False  # read it back next time: another worker may have won the race
        committed = await committed_offsets(self.settings.bootstrap_servers, self.spec.group_id,
                                            self.topic)
        behind = {p: o for p, o in target.items() if committed.get(int(p), 0) < o}
        if behind:
            logger.info("%s replaying: behind on partitions %s", self.spec.group_id, behind)
            return False
        try:
            async with conn.transaction():
                await conn.execute(ACTIVATE_VERSION_SQL, (self.spec.vectorizer_id, self.spec.version))
        except psycopg.errors.NoDataFound:
            return False  # another worker activated it first
        logger.info("%s caught up with %s and is now active", self.spec.group_id, target)
        self._settled = True
        return True


def create_app(spec: VersionSpec, topic: str, settings: WorkerSettings, *,
               build_pipeline: bool = True) -> faust.App:
    """The faust app of one config version (``app.main()`` or ``faust.Worker(app)`` runs it).

    ``build_pipeline=False`` leaves the pipeline to ``app.runner.build()``, which the caller
    must await (the engine does, while the app starts)."""
    heartbeat = max(settings.session_timeout / 10, 0.1)
    datadir = os.path.join(tempfile.gettempdir(), "vectorizer-faust")  # unused: no faust tables
    os.makedirs(datadir, exist_ok=True)
    app = faust.App(
        spec.group_id,
        broker=broker_urls(settings.bootstrap_servers),  # faust's aiokafka, shorter fetch wait
        consumer_auto_offset_reset="earliest",  # a new group replays the topic from the start
        broker_session_timeout=settings.session_timeout,
        broker_heartbeat_interval=heartbeat,
        broker_rebalance_timeout=max(settings.session_timeout * 2, 10.0),
        broker_commit_interval=settings.commit_interval,
        stream_wait_empty=True,
        topic_disable_leader=True,
        producer_acks=-1,
        web_enabled=settings.web_port is not None,
        web_port=settings.web_port or 6066,
        store="memory://",
        TableManager=TableManager,  # no tables: no start-up sleep
        datadir=os.path.join(datadir, spec.group_id),
    )
    source = app.topic(topic, key_type=bytes, value_type=bytes,
                       key_serializer="raw", value_serializer="raw")
    dlq = app.topic(dlq_topic(topic), key_type=bytes, value_type=bytes,
                    key_serializer="raw", value_serializer="raw", partitions=1)
    runner = VersionRunner(spec, topic, settings, dlq, build_pipeline=build_pipeline)
    app.runner = runner  # type: ignore[attr-defined]  # for tests and the CLI

    @app.agent(source, name=f"embed-{spec.vectorizer_id}-v{spec.version}")
    async def embed_changes(stream: faust.StreamT[Any]) -> None:
        # Batches overlap, each in another stage. With a local model (one batch embedding at a
        # time) the agent plans and embeds batch N+1 while batch N commits. With a provider behind
        # a network (``batches_in_flight`` > 1) the agent only plans: batch N+2 is planned while
        # N+1 (and more, up to that number) are embedding and N commits. No deeper than that:
        # while the stages are full the agent waits, and the events that arrive meanwhile make
        # its next batch bigger, so a steady trickle is not cut into ever more tiny batches that
        # each pay a whole transaction (measured: at 200 rows/s the local model's p95 grew by
        # half with a third stage). Commits stay in batch order, and each batch's events are
        # acked by its own task right after its transaction.
        tail: asyncio.Future[None] | None = None  # the newest batch's task
        embedding_slots: asyncio.Semaphore | None = None  # sized once the pipeline is built
        in_flight: set[asyncio.Future[None]] = set()  # every such task not yet finished
        embedding: asyncio.Future[PreparedBatch] | None = None  # the newest batch's embedding

        async def ack(events: list[Any]) -> None:
            for event in events:
                await stream.ack(event)

        async def isolate_then_ack(events: list[Any], exc: BatchFailedError) -> None:
            await runner.isolate([e.message.value for e in events],
                                 [e.message.key for e in events], exc)
            await ack(events)

        async def embed(planned: PlannedBatch, slots: asyncio.Semaphore) -> PreparedBatch:
            try:
                return await runner.embed_batch(planned)
            finally:
                slots.release()

        async def commit_in_order(embedding: Awaitable[PreparedBatch], events: list[Any],
                                  before: asyncio.Future[None] | None) -> None:
            failure: BatchFailedError | None = None
            try:
                prepared = await embedding
            except BatchFailedError as exc:
                failure = exc
            if before is not None:
                await before  # the batch before commits first
            if failure is not None:
                await isolate_then_ack(events, failure)
                return
            try:
                await runner.commit_batch(prepared, [e.message.partition for e in events])
            except BatchFailedError as exc:
                await isolate_then_ack(events, exc)
                return
            await ack(events)

        try:
            # cut when the stream goes quiet: a lone change does not wait out batch_within
            batches = quiet_batches(stream, settings.batch_size, settings.batch_within)
            async for events in batches:
                if tail is not None and tail.done():
                    tail.result()  # a bug in an earlier batch's task ends the agent here
                values = [e.message.value for e in events]
                keys = [e.message.key for e in events]
                try:
                    planned = await runner.plan_batch(values, keys)
                except BatchFailedError as exc:
                    if tail is not None:  # keep commits in batch order
                        await tail
                        tail = None
                    await isolate_then_ack(events, exc)
                    continue
                at_once = runner.batches_in_flight
                if embedding_slots is None:  # the pipeline exists once a batch was planned
                    embedding_slots = asyncio.Semaphore(at_once)
                await embedding_slots.acquire()
                embedding = asyncio.ensure_future(embed(planned, embedding_slots))
                if at_once == 1:
                    await asyncio.wait([embedding])  # here, while the batch before commits
                while len(in_flight) > (at_once if at_once > 1 else 0):  # the stages are full
                    await asyncio.wait(in_flight, return_when=asyncio.FIRST_COMPLETED)
                tail = asyncio.ensure_future(commit_in_order(embedding, events, tail))
                in_flight.add(tail)
                tail.add_done_callback(in_flight.discard)
        finally:
            for task in in_flight:
                task.cancel()  # rolled back and not acked: redelivered, never lost
            if embedding is not None:
                embedding.cancel()  # one not handed to a task yet (a no-op once it is done)

    @app.task
    async def declare_dead_letter_topic() -> None:
        # brokers that do not auto-create topics (production Kafka) need it to exist
        try:
            await dlq.maybe_declare()
        except Exception as exc:  # noqa: BLE001  # an existing topic or a broker that refuses: sends will tell
            logger.warning("could not declare %s: %s", dlq.get_topic_name(), exc)

    @app.timer(settings.activation_interval)
    async def activate_when_caught_up() -> None:
        try:
            await runner.check_caught_up()
        except Exception as exc:  # noqa: BLE001  # the broker may be busy; the next tick tries again
            logger.warning("catch-up check failed: %s: %s", type(exc).__name__, exc)

    if metrics_enabled():
        @app.timer(5.0)
        async def report_consumer_lag() -> None:
            # high-water marks as the fetches saw them; committed offsets as faust committed them
            consumer = app.consumer
            lag = 0
            try:
                for tp in consumer.assignment():
                    if tp.topic != topic:
                        continue
                    highwater = consumer.highwater(tp)
                    if highwater is not None:
                        # faust keeps what it committed only in this private map
                        committed = consumer._committed_offset.get(tp) or 0  # type: ignore[attr-defined]
                        lag += max(int(highwater) - int(committed), 0)
            except Exception as exc:  # noqa: BLE001  # not started or rebalancing: the next tick measures
                logger.debug("consumer lag unknown: %s", exc)
                return
            runner.metrics.consumer_lag.set(lag)

    return app
