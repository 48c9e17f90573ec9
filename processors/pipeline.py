"""One batch of change events of one vectorizer config version -> the embedding store.

The steps, in order: keep the newest event per row; skip what the store already has (applied
LSN, truncated LSN); load the text (re-reading rows whose text arrived as unchanged TOAST);
chunk; format; hash each formatted chunk; embed only hashes the row does not already have;
write everything in one transaction. Rows that fail for good are recorded (errors table and
dead-letter topic) and the rest of the batch goes on.

Why hashes of the *formatted* text: that is exactly what gets embedded, so equal hashes mean
equal vectors, whatever column changed. An update of a column the vectorizer does not read
produces the same hashes and therefore no embedding call and no store write.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import psycopg
from psycopg import AsyncConnection

from pgai_orm.catalog.usage import arecord_usage
from pgai_orm.configuration import VectorizerConfig
from pgai_orm.embedders import Embedder, EmbeddingError, create_embedder
from pgai_orm.embedders.usage import Usage
from pgai_orm.errors import InvariantError, VectorizerError
from pgai_orm.events import Event, RowChange
from processors.chunking import Chunker, chunker_for
from processors.column_store import store_for
from processors.errors_sink import ErrorSink, RowError
from processors.events import ReducedBatch, reduce_newest
from processors.formatting import Formatter, FormattingError, formatter_for, template_placeholders
from processors.loading import Loader, LoadFailure
from processors.store import Applied, ChunkWrite, RowWrite, StalePlanError, Vector

logger = logging.getLogger(__name__)

#: How often a batch is planned again when another worker changed its rows meanwhile.
MAX_PLAN_ATTEMPTS = 5


def chunk_hash(text: str) -> str:
    """Hash of a formatted chunk: equal hashes mean the stored vector can be reused."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:32]


def config_objects(config: Mapping[str, Any]) -> VectorizerConfig:
    """The stored config (``VectorizerConfig.to_dict()``) rebuilt and validated."""
    return VectorizerConfig.from_dict(dict(config))


def source_column(config: Mapping[str, Any]) -> str:
    """The column that gets chunked: ``loading.column_name``, else ``chunking.chunk_column``."""
    loading = config.get("loading") or {}
    column = loading.get("column_name") or (config.get("chunking") or {}).get("chunk_column")
    if not column:
        raise ValueError("config names no column to chunk (loading.column_name / chunk_column)")
    return str(column)


def read_columns(config: Mapping[str, Any]) -> frozenset[str]:
    """Every source column whose value can change what is embedded."""
    columns = {source_column(config)}
    formatting = config.get("formatting") or {}
    if formatting.get("implementation") == "python_template":
        columns.update(template_placeholders(formatting["template"]))
    return frozenset(columns)


@dataclass(frozen=True, slots=True)
class VersionSpec:
    """What the pipeline needs to know about one vectorizer config version."""

    vectorizer_id: int
    version: int
    source_schema: str
    source_table: str
    pk_columns: tuple[str, ...]
    config: Mapping[str, Any]
    #: the Kafka consumer group (and faust app id) of this version, see ``processors.app``
    group_id: str = ""
    #: the vectorizer's name (metrics label, log lines)
    name: str = ""


@dataclass(slots=True)
class BatchReport:
    """What one batch did; summed into the worker's counters and logged."""

    events: int = 0
    changes: int = 0
    skipped: int = 0
    rows_written: int = 0
    chunks_embedded: int = 0
    chunks_reused: int = 0
    chunks_written: int = 0
    chunks_deleted: int = 0
    embedding_calls: int = 0
    #: what the provider billed for this batch: tokens, answered requests, 429s
    tokens: int = 0
    requests: int = 0
    rate_limited: int = 0
    errors: int = 0
    rereads: int = 0
    truncated: bool = False
    inactive: bool = False

    def add(self, other: BatchReport) -> None:
        for name in self.__slots__:
            value = getattr(other, name)
            if isinstance(value, bool):
                setattr(self, name, getattr(self, name) or value)
            else:
                setattr(self, name, getattr(self, name) + value)


@dataclass(slots=True)
class _Planned:
    """A row whose chunks are known; ``need`` maps hash -> formatted text to embed."""

    change: RowChange
    base: Applied | None
    chunks: list[tuple[str, str]]  # (chunk, hash) by seq
    need: dict[str, str] = field(default_factory=dict)


@dataclass(slots=True)
class PreparedBatch:
    """A batch planned and embedded, ready for its transaction (:meth:`Pipeline.commit`)."""

    batch: ReducedBatch
    report: BatchReport
    events: Sequence[Event | None] = ()
    writes: list[RowWrite] = field(default_factory=list)
    errors: list[RowError] = field(default_factory=list)


@dataclass(slots=True)
class PlannedBatch:
    """A batch read, chunked and formatted, with its texts not yet embedded (:meth:`Pipeline.embed`)."""

    prepared: PreparedBatch
    planned: list[_Planned]


class Pipeline:
    """Applies batches of events to the store of one config version.

    :meth:`process` does a whole batch. :meth:`plan`, :meth:`embed` and :meth:`commit` split it
    so that a worker plans the next batch while this one is embedded and the one before commits
    (the model, the loop and the database each busy with a different batch).
    """

    def __init__(
        self,
        spec: VersionSpec,
        embedder: Embedder,
        errors: ErrorSink,
        *,
        chunker: Chunker | None = None,
        formatter: Formatter | None = None,
    ) -> None:
        objects = config_objects(spec.config)
        self.spec = spec
        self.embedder = embedder
        self.errors = errors
        self.chunker = chunker or chunker_for(objects.chunking)
        self.formatter = formatter or formatter_for(objects.formatting)
        self.source_column = source_column(spec.config)
        self.read_columns = read_columns(spec.config)
        # documents (a URI or bytea column) are fetched and parsed; plain text columns skip this
        self.loader = (None if objects.loading is None else
                       Loader(objects.loading, objects.parsing, spec.source_schema, spec.source_table))
        self.store = store_for(spec.vectorizer_id, spec.version, spec.source_schema,
                               spec.source_table, spec.pk_columns, spec.config, self.read_columns)

    @classmethod
    def from_spec(cls, spec: VersionSpec, errors: ErrorSink, **embedder_options: Any) -> Pipeline:
        """Build the embedder from the version's config (``create_embedder``) and the pipeline."""
        embedder = create_embedder(config_objects(spec.config).embedding, **embedder_options)
        return cls(spec, embedder, errors)

    async def process(self, conn: AsyncConnection[Any], events: Sequence[Event | None]) -> BatchReport:
        """Apply ``events`` (one batch, any partitions) and commit; return what happened.

        ``conn`` must be in autocommit mode: reads run outside the write transaction, so no
        transaction stays open while the provider is called.
        """
        prepared = await self.prepare(conn, events)
        for attempt in range(1, MAX_PLAN_ATTEMPTS + 1):
            try:
                return await self.commit(conn, prepared)
            except StalePlanError as exc:
                logger.info("batch plan went stale (%s), planning again (%d)", exc, attempt)
                spent = prepared.report
                prepared = await self.prepare(conn, events, prepared.batch)
                prepared.report.embedding_calls += spent.embedding_calls
                prepared.report.chunks_embedded += spent.chunks_embedded
                prepared.report.tokens += spent.tokens
                prepared.report.requests += spent.requests
                prepared.report.rate_limited += spent.rate_limited
        raise BatchStaleError(f"batch still stale after {MAX_PLAN_ATTEMPTS} attempts")

    async def prepare(self, conn: AsyncConnection[Any], events: Sequence[Event | None],
                      batch: ReducedBatch | None = None) -> PreparedBatch:
        """Everything before the transaction: :meth:`plan`, then :meth:`embed`."""
        return await self.embed(await self.plan(conn, events, batch))

    async def plan(self, conn: AsyncConnection[Any], events: Sequence[Event | None],
                   batch: ReducedBatch | None = None) -> PlannedBatch:
        """State reads, re-reads, document loading, chunking and formatting: all but embedding."""
        batch = batch or reduce_newest(events)
        report = BatchReport(events=len(events), changes=len(batch.changes))
        prepared = PreparedBatch(batch, report, events)
        state = await self.store.version_state(conn)
        if state is None or not state.writable:
            report.inactive = True
            return PlannedBatch(prepared, [])
        applied = await self.store.applied(conn, (c.key_json for c in batch.changes))
        floor = max(state.truncated_lsn, batch.truncate_lsn or 0)
        todo: list[RowChange] = []
        for change in batch.changes:
            base = applied.get(change.key_json)
            if base is not None and batch.truncate_lsn is not None and base.lsn < batch.truncate_lsn:
                applied.pop(change.key_json)  # the batch's truncate removes it first
                base = None
            if change.lsn <= floor or (base is not None and base.lsn >= change.lsn):
                report.skipped += 1
                continue
            todo.append(change)
        planned = await self._plan(conn, todo, applied, prepared.writes, prepared.errors, report)
        return PlannedBatch(prepared, planned)

    async def embed(self, planned: PlannedBatch) -> PreparedBatch:
        """Embed a planned batch's new texts: the batch, ready for :meth:`commit`.

        Safe to call again on the same plan (a retry): it adds to copies of the plan's writes.
        Dead letters are published here, before the store commit, so that a crash in between
        duplicates them rather than losing them.
        """
        base = planned.prepared
        prepared = replace(base, writes=list(base.writes), errors=list(base.errors))
        if not base.report.inactive:
            await self._embed(planned.planned, prepared.writes, prepared.errors, prepared.report)
        if prepared.errors:
            await self.errors.publish(prepared.errors)
        return prepared

    @property
    def model_name(self) -> str:
        """The embedding model, as usage counts and metrics name it."""
        return str(getattr(self.embedder, "model", None) or "unknown")

    async def commit(self, conn: AsyncConnection[Any], prepared: PreparedBatch) -> BatchReport:
        """The batch's one transaction; raises :class:`StalePlanError` if rows changed meanwhile."""
        batch, report, writes, row_errors = (prepared.batch, prepared.report, prepared.writes,
                                             prepared.errors)
        if report.inactive:
            return report
        async with conn.transaction():
            locked = await self.store.version_state(
                conn, lock=True, exclusive=batch.truncate_lsn is not None)
            if locked is None or not locked.writable:
                report.inactive = True
                return report
            if batch.truncate_lsn is not None and batch.truncate_lsn > locked.truncated_lsn:
                await self.store.truncate(conn, locked, batch.truncate_lsn)
                report.truncated = True
            outcome = await self.store.write(conn, locked, writes, batch.changes)
            # a row keeps at most its latest error: older ones are replaced, a success clears them
            await self.errors.clear(conn, list(outcome.applied_keys))
            await self.errors.record(conn, [e for e in row_errors if e.key_json in outcome.applied_keys])
            # what embedding this batch cost, counted with the batch: exactly once per commit
            await arecord_usage(conn, self.spec.vectorizer_id, self.spec.version,
                                self.embedder.provider, self.model_name, tokens=report.tokens,
                                requests=report.requests, rate_limited=report.rate_limited)
        report.skipped += len(outcome.superseded_keys)
        report.rows_written = len(outcome.applied_keys)
        report.chunks_written = outcome.chunks_written
        report.chunks_deleted = outcome.chunks_deleted
        report.errors = len([e for e in row_errors if e.key_json in outcome.applied_keys])
        return report

    async def _plan(
        self,
        conn: AsyncConnection[Any],
        todo: Sequence[RowChange],
        applied: Mapping[str, Applied],
        writes: list[RowWrite],
        row_errors: list[RowError],
        report: BatchReport,
    ) -> list[_Planned]:
        """Chunk and format every change; deletes and failures become writes right away."""
        rows: dict[str, dict[str, Any]] = {}
        reread: list[str] = []
        names = await self._renames(conn, todo)
        for change in todo:
            base = applied.get(change.key_json)
            if change.is_delete:
                writes.append(RowWrite(change.key_json, change.lsn, (), base))
                continue
            missing = _toasted(self.read_columns, change.unchanged_toast, names)
            if base is not None and base.chunk_hashes and self.read_columns <= missing:
                # nothing the vectorizer reads changed: keep the chunks, record the LSN (a row
                # without chunks may have failed before, so it is computed again instead)
                writes.append(RowWrite(change.key_json, change.lsn, _kept(base), base))
                continue
            if change.row is None:
                raise InvariantError(f"{change.op} event without a row")  # decode_event refuses it
            rows[change.key_json] = change.row
            if missing:
                reread.append(change.key_json)
        if reread:
            fresh = await self.store.reread(conn, reread)
            report.rereads += len(reread)
            for key in reread:
                if key in fresh:
                    rows[key] = {**fresh[key], **rows[key]}
                else:
                    rows.pop(key)  # deleted since: its delete event follows
        loaded: dict[str, str | LoadFailure] = {}
        if self.loader is not None:  # the load step: fetch and parse, concurrently per batch
            named = {k: _follow_renames(r, self.read_columns, names) if names else r
                     for k, r in rows.items()}
            loaded = await self.loader.load(conn, {k: r[self.source_column] for k, r in named.items()
                                                   if self.source_column in r})

        planned: list[_Planned] = []
        for change in todo:
            row = rows.get(change.key_json)
            if row is None:
                continue
            base = applied.get(change.key_json)
            if names:
                row = _follow_renames(row, self.read_columns, names)
            text = loaded.get(change.key_json)
            if isinstance(text, LoadFailure):
                row_errors.append(RowError(change.key_json, change.lsn, "load", text.message,
                                           text.details))
                writes.append(RowWrite(change.key_json, change.lsn, (), base))
                continue
            try:
                plan = self._chunk_and_format(change, row, base, text)
            except _RowFailure as failure:
                row_errors.append(failure.error)
                writes.append(RowWrite(change.key_json, change.lsn, (), base))
                continue
            planned.append(plan)
        return planned

    async def _renames(self, conn: AsyncConnection[Any],
                       todo: Sequence[RowChange]) -> dict[str, tuple[str, ...]]:
        """The other names of the columns this version reads, asked of the catalog only when a
        change lacks one of them under its own name (a rename in the source: events after it
        carry the new name, events before it the old one); else empty."""
        wanted = self.read_columns
        for change in todo:
            if change.row is not None and not wanted <= change.row.keys() | change.unchanged_toast:
                return await self.store.column_names(conn)
        return {}

    def _chunk_and_format(
        self, change: RowChange, row: Mapping[str, Any], base: Applied | None,
        loaded: str | None = None,
    ) -> _Planned:
        if self.source_column not in row:
            raise _RowFailure(change, "load", f"column {self.source_column!r} is not in the row")
        text = row[self.source_column] if loaded is None else loaded
        if text is not None and not isinstance(text, str):
            text = str(text)
        try:
            pieces = self.chunker(text)
        except Exception as exc:  # noqa: BLE001  # a splitter bug on one row must not stop the stream
            raise _RowFailure(change, "chunk", f"{type(exc).__name__}: {exc}") from None
        chunks: list[tuple[str, str]] = []
        need: dict[str, str] = {}
        known = set(base.chunk_hashes) if base else set()
        for piece in pieces:
            try:
                formatted = self.formatter(piece, row)
            except FormattingError as exc:
                raise _RowFailure(change, "format", str(exc)) from None
            digest = chunk_hash(formatted)
            chunks.append((piece, digest))
            if digest not in known:
                need[digest] = formatted
        return _Planned(change, base, chunks, need)

    async def _embed(
        self,
        planned: Sequence[_Planned],
        writes: list[RowWrite],
        row_errors: list[RowError],
        report: BatchReport,
    ) -> None:
        """Embed what is new, in one call for the batch; on a failure, row by row."""
        texts: dict[str, str] = {}
        for plan in planned:
            texts.update(plan.need)
            report.chunks_reused += len(plan.chunks) - len(plan.need)
        vectors: dict[str, Vector] = {}
        failed: dict[str, RowError] = {}
        if texts:
            try:
                vectors = await self._embed_texts(texts, report)
            except EmbeddingError as exc:
                logger.warning("embedding the batch failed (%s); retrying row by row", exc)
                for plan in planned:
                    if not plan.need:
                        continue
                    try:
                        vectors.update(await self._embed_texts(plan.need, report))
                    except EmbeddingError as row_exc:
                        failed[plan.change.key_json] = _error(plan.change, "embed", row_exc)
        for plan in planned:
            change = plan.change
            error = failed.get(change.key_json)
            if error is not None:
                row_errors.append(error)
                writes.append(RowWrite(change.key_json, change.lsn, (), plan.base))
                continue
            chunks = tuple(
                ChunkWrite(seq, piece, digest, vectors.get(digest) if digest in plan.need else None)
                for seq, (piece, digest) in enumerate(plan.chunks)
            )
            writes.append(RowWrite(change.key_json, change.lsn, chunks, plan.base))

    async def _embed_texts(self, texts: Mapping[str, str], report: BatchReport) -> dict[str, Vector]:
        hashes = list(texts)
        report.embedding_calls += 1
        usage = Usage()
        try:
            vectors = await self.embedder.embed([texts[h] for h in hashes], usage=usage)
        finally:  # requests that succeeded before a failure were billed too
            report.tokens += usage.tokens
            report.requests += usage.requests
            report.rate_limited += usage.rate_limited
        report.chunks_embedded += len(hashes)
        return dict(zip(hashes, vectors, strict=True))


class BatchStaleError(VectorizerError):
    """A batch's rows kept changing under it (other workers during a rebalance) at every plan."""


class _RowFailure(VectorizerError):
    def __init__(self, change: RowChange, step: str, message: str) -> None:
        super().__init__(message)
        self.error = RowError(change.key_json, change.lsn, step, message)


def _error(change: RowChange, step: str, exc: EmbeddingError) -> RowError:
    details: dict[str, Any] = {"error": type(exc).__name__}
    if exc.status is not None:
        details["status"] = exc.status
    return RowError(change.key_json, change.lsn, step, str(exc), details)


def _toasted(read_columns: frozenset[str], unchanged_toast: frozenset[str],
             names: Mapping[str, tuple[str, ...]]) -> frozenset[str]:
    """The read columns a change sent as unchanged TOAST, under their own or another name."""
    if not names:
        return read_columns & unchanged_toast
    return frozenset(c for c in read_columns
                     if c in unchanged_toast or any(n in unchanged_toast for n in names.get(c, ())))


def _follow_renames(row: dict[str, Any], read_columns: frozenset[str],
                    names: Mapping[str, tuple[str, ...]]) -> dict[str, Any]:
    """``row`` with each read column it lacks taken from another name of that column (a
    rename followed by attnum); what no name gives stays missing (a load or format error)."""
    out = row
    for column in read_columns - row.keys():
        for name in names.get(column, ()):
            if name in row:
                out = out if out is not row else dict(row)
                out[column] = row[name]
                break
    return out


def _kept(base: Applied) -> tuple[ChunkWrite, ...]:
    """The row's stored chunks, unchanged (only their hashes matter: nothing is rewritten)."""
    return tuple(ChunkWrite(seq, "", digest, None) for seq, digest in enumerate(base.chunk_hashes))


#: Errors of the database or the network around it: the batch is retried, never acked.
RETRYABLE_DB_ERRORS: tuple[type[BaseException], ...] = (
    psycopg.OperationalError,
    psycopg.errors.DeadlockDetected,
    psycopg.errors.SerializationFailure,
    psycopg.errors.UndefinedTable,
    asyncio.TimeoutError,
)
