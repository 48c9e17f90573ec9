"""The embedding store of one vectorizer config version, and the per-row state that guards it.

Every write of a batch happens in one transaction (the caller's) together with
``vectorizer.applied_state``: the LSN applied per source row and the hashes of its chunks. The
LSN makes redelivery harmless (an event at or below it is skipped), the hashes let the pipeline
embed only the chunks whose text changed.

Rows are addressed by their key as JSON (the Kafka key). Postgres turns that JSON into the
store's typed key columns itself (``jsonb_populate_record(NULL::<store>, key)``), so no type
name or value is ever formatted into SQL: only identifiers, through ``psycopg.sql``.

The store table is looked up in ``vectorizer.config_versions`` inside each transaction, under a
share lock on the vectorizer row, because ``vectorizer.activate_version`` renames store tables
(and takes that row ``FOR UPDATE`` first): a batch writes either entirely before or entirely
after a switch, never into a table that was renamed under it.
"""

from __future__ import annotations

import weakref
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import orjson
from pgvector.psycopg import register_vector_async
from psycopg import AsyncConnection, sql

from pgai_orm.errors import VectorizerError
from pgai_orm.events import RowChange, canonical_key

Vector = np.ndarray | Sequence[float]

@dataclass(frozen=True, slots=True)
class VersionState:
    """What the catalog says about this config version right now."""

    status: str
    target_schema: str
    target_table: str
    truncated_lsn: int

    @property
    def writable(self) -> bool:
        return self.status in ("active", "building")


@dataclass(frozen=True, slots=True)
class Applied:
    """The last change applied to a source row and the hashes of its stored chunks, by seq."""

    lsn: int
    chunk_hashes: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class ChunkWrite:
    """One chunk of a row after the write.

    ``embedding`` is the new vector; ``None`` means "reuse the stored vector of the chunk with
    the same hash" (a chunk whose text did not change costs no embedding call).
    """

    seq: int
    chunk: str
    hash: str
    embedding: Vector | None


@dataclass(frozen=True, slots=True)
class RowWrite:
    """The new state of one source row: its chunks (empty for deletes and failed rows).

    ``base`` is the applied state the write was planned against; if the row's state changed
    since (another worker during a rebalance), the plan is stale and is made again.
    """

    key_json: str
    lsn: int
    chunks: tuple[ChunkWrite, ...]
    base: Applied | None

    @property
    def hashes(self) -> list[str]:
        return [c.hash for c in self.chunks]


@dataclass(slots=True)
class WriteOutcome:
    """Which planned rows the transaction applied (the others were superseded)."""

    applied_keys: set[str] = field(default_factory=set)
    superseded_keys: set[str] = field(default_factory=set)
    chunks_written: int = 0
    chunks_deleted: int = 0
    truncated: bool = False


class StalePlanError(VectorizerError):
    """A row's applied state changed between planning and writing; plan the batch again."""


class EmbeddingStore:
    """Reads and writes the store and applied state of ``(vectorizer_id, version)``."""

    def __init__(
        self,
        vectorizer_id: int,
        version: int,
        source_schema: str,
        source_table: str,
        pk_columns: Sequence[str],
    ) -> None:
        self.vectorizer_id = vectorizer_id
        self.version = version
        self.source = sql.Identifier(source_schema, source_table)
        self.source_name = (source_schema, source_table)
        self.pk_columns = tuple(pk_columns)
        self._lock_prefix = f"vectorizer:{vectorizer_id}:{version}:"
        self._vector_ready: weakref.WeakSet[AsyncConnection[Any]] = weakref.WeakSet()

    async def _binary_vectors(self, conn: AsyncConnection[Any]) -> None:
        """Vectors travel in pgvector's binary form (COPY and reads), once set up per connection."""
        if conn not in self._vector_ready:
            await register_vector_async(conn)
            self._vector_ready.add(conn)

    # -- catalog --------------------------------------------------------------------------------

    async def version_state(
        self, conn: AsyncConnection[Any], *, lock: bool = False, exclusive: bool = False
    ) -> VersionState | None:
        """The version's status and store table; ``None`` once the vectorizer is dropped.

        ``lock`` (inside a transaction) share-locks the vectorizer row, so that an activation,
        which renames store tables, waits for this transaction. ``exclusive`` (for a batch that
        applies a truncate) locks the version row against every other batch: the truncate must
        see all rows written before it, and no batch may start with the old truncated LSN.
        """
        query = (
            "SELECT cv.status, cv.target_schema, cv.target_table,"
            " (cv.truncated_lsn - '0/0'::pg_lsn)::bigint"
            " FROM vectorizer.config_versions cv JOIN vectorizer.vectorizers v ON v.id = cv.vectorizer_id"
            " WHERE cv.vectorizer_id = %s AND cv.version = %s"
        )
        if lock:
            query += " FOR KEY SHARE OF v " + ("FOR UPDATE OF cv" if exclusive else "FOR SHARE OF cv")
        cur = await conn.execute(query, (self.vectorizer_id, self.version))
        row = await cur.fetchone()
        if row is None:
            return None
        return VersionState(row[0], row[1], row[2], int(row[3]))

    # -- applied state --------------------------------------------------------------------------

    async def applied(self, conn: AsyncConnection[Any], keys: Iterable[str]) -> dict[str, Applied]:
        """Applied state of the given keys (canonical JSON); rows never applied are absent."""
        key_list = list(keys)
        if not key_list:
            return {}
        cur = await conn.execute(
            "SELECT pk, (lsn - '0/0'::pg_lsn)::bigint, chunk_hashes FROM vectorizer.applied_state"
            " WHERE vectorizer_id = %s AND version = %s AND pk = ANY(%s::jsonb[])",
            (self.vectorizer_id, self.version, key_list),
        )
        return {
            canonical_key(pk).decode(): Applied(int(lsn), tuple(hashes or ()))
            for pk, lsn, hashes in await cur.fetchall()
        }

    async def lock_keys(self, conn: AsyncConnection[Any], keys: Iterable[str]) -> None:
        """Transaction-level advisory locks on the rows, in a fixed order (no deadlocks).

        Two workers only meet on a row during a rebalance; the lock makes the later one see
        the earlier one's applied LSN instead of interleaving writes of one row.
        """
        key_list = sorted(set(keys))
        if not key_list:
            return
        await conn.execute(
            "SELECT pg_advisory_xact_lock(h) FROM (SELECT DISTINCT hashtextextended(%s || k, 0) AS h"
            " FROM unnest(%s::text[]) AS k ORDER BY 1) AS s",
            (self._lock_prefix, key_list),
        )

    # -- source rows ----------------------------------------------------------------------------

    async def reread(
        self, conn: AsyncConnection[Any], keys: Sequence[str]
    ) -> dict[str, dict[str, Any]]:
        """Current source rows by key, for changes whose text arrived as unchanged TOAST (or
        without a column the vectorizer reads).

        A row that no longer exists is absent: its delete event is still on its way. Keys carry
        the store's column names; a key column renamed in the source since is matched under its
        current name (the catalog follows it by attnum, ``vectorizer.source_key_columns``).
        """
        if not keys:
            return {}
        cur = await conn.execute(
            "SELECT store_name, source_name FROM vectorizer.source_key_columns(%s, %s)", self.source_name)
        current = {store: now for store, now in await cur.fetchall() if now is not None}
        names = [current.get(c, c) for c in self.pk_columns]
        query = sql.SQL(
            "SELECT x.i, to_jsonb(s) FROM jsonb_array_elements(%s::jsonb) WITH ORDINALITY AS x(key, i)"
            " CROSS JOIN LATERAL jsonb_populate_record(NULL::{src}, x.key) AS r"
            " JOIN {src} AS s ON {match}"
        ).format(src=self.source, match=sql.SQL(" AND ").join(
            sql.SQL("{} = {}").format(sql.Identifier("s", c), sql.Identifier("r", c)) for c in names))
        if names == list(self.pk_columns):
            payload = "[" + ",".join(keys) + "]"
        else:
            renamed = dict(zip(self.pk_columns, names, strict=True))
            payload = orjson.dumps([{renamed.get(k, k): v for k, v in orjson.loads(key).items()}
                                    for key in keys]).decode()
        cur = await conn.execute(query, (payload,))
        return {keys[int(i) - 1]: row for i, row in await cur.fetchall()}

    async def column_names(self, conn: AsyncConnection[Any]) -> dict[str, tuple[str, ...]]:
        """Per source column this version reads, the other names an event's row may carry it
        under, best first (``vectorizer.column_names``: its current name after a rename, then
        the names it had in the vectorizer's versions)."""
        cur = await conn.execute("SELECT attname, other_names FROM vectorizer.column_names(%s, %s)",
                                 (self.vectorizer_id, self.version))
        return {name: tuple(dict.fromkeys(others or ())) for name, others in await cur.fetchall()}

    # -- writes (inside the caller's transaction) -----------------------------------------------

    async def truncate(self, conn: AsyncConnection[Any], state: VersionState, lsn: int) -> None:
        """Apply a TRUNCATE at ``lsn``: remove every row applied before it, remember the LSN.

        Rows applied after it (changes from other partitions that overtook the truncate event)
        stay: they were written after the truncate happened in the source.
        """
        store = sql.Identifier(state.target_schema, state.target_table)
        await conn.execute(
            sql.SQL(
                "WITH gone AS (DELETE FROM vectorizer.applied_state a WHERE a.vectorizer_id = %s"
                " AND a.version = %s AND a.lsn < '0/0'::pg_lsn + %s::numeric RETURNING a.pk)"
                " DELETE FROM {store} AS t USING gone AS g,"
                " LATERAL jsonb_populate_record(NULL::{store}, g.pk) AS r WHERE {match}"
            ).format(store=store, match=self._match("t", "r")),
            (self.vectorizer_id, self.version, lsn),
        )
        await conn.execute(
            "UPDATE vectorizer.config_versions SET truncated_lsn ="
            " greatest(truncated_lsn, '0/0'::pg_lsn + %s::numeric)"
            " WHERE vectorizer_id = %s AND version = %s",
            (lsn, self.vectorizer_id, self.version),
        )

    async def write(
        self, conn: AsyncConnection[Any], state: VersionState, rows: Sequence[RowWrite],
        changes: Sequence[RowChange] = (),
    ) -> WriteOutcome:
        """Lock, re-check and write ``rows``; must run inside a transaction.

        Rows whose applied LSN already reached theirs (or that lie below the truncated LSN) are
        superseded and left alone. Raises :class:`StalePlanError` when a row's state changed
        since it was planned. ``changes`` (the batch's newest change per row) are not needed
        here, where rows are addressed by key alone; the column destination guards with them.
        """
        outcome = WriteOutcome()
        accepted = await self._accept(conn, state, rows, outcome)
        if not accepted:
            return outcome
        store = sql.Identifier(state.target_schema, state.target_table)
        await self._binary_vectors(conn)
        copies = await self._fetch_copies(conn, store, accepted)
        outcome.chunks_deleted = await self._delete_tails(conn, store, accepted)
        outcome.chunks_written = await self._upsert_chunks(conn, store, accepted, copies)
        await self._upsert_applied(conn, accepted)
        outcome.applied_keys = {r.key_json for r in accepted}
        return outcome

    async def _accept(self, conn: AsyncConnection[Any], state: VersionState,
                      rows: Sequence[RowWrite], outcome: WriteOutcome) -> list[RowWrite]:
        """Lock the rows and keep those still to write (see :meth:`write`)."""
        await self.lock_keys(conn, (r.key_json for r in rows))
        current = await self.applied(conn, (r.key_json for r in rows))
        accepted: list[RowWrite] = []
        for row in rows:
            now = current.get(row.key_json)
            if row.lsn <= state.truncated_lsn or (now is not None and now.lsn >= row.lsn):
                outcome.superseded_keys.add(row.key_json)
                continue
            if now != row.base:
                raise StalePlanError(row.key_json)
            accepted.append(row)
        return accepted

    async def _fetch_copies(
        self, conn: AsyncConnection[Any], store: sql.Composable, rows: Sequence[RowWrite]
    ) -> dict[tuple[str, str], Vector]:
        """Stored vectors of unchanged chunks that moved to another seq."""
        wanted: list[dict[str, Any]] = []
        for row in rows:
            old = row.base.chunk_hashes if row.base else ()
            for chunk in row.chunks:
                if chunk.embedding is not None or _unchanged_at_seq(old, chunk):
                    continue
                try:
                    seq = old.index(chunk.hash)
                except ValueError:
                    raise StalePlanError(row.key_json) from None
                wanted.append({"i": len(wanted), "key": orjson.Fragment(row.key_json), "seq": seq})
        if not wanted:
            return {}
        query = sql.SQL(
            "SELECT x.i, t.embedding FROM jsonb_to_recordset(%s::jsonb) AS x(i int, key jsonb, seq int)"
            " CROSS JOIN LATERAL jsonb_populate_record(NULL::{store}, x.key) AS r"
            " JOIN {store} AS t ON {match} AND t.chunk_seq = x.seq"
        ).format(store=store, match=self._match("t", "r"))
        cur = await conn.execute(query, (orjson.dumps(wanted).decode(),))
        found = {int(i): _as_array(vector) for i, vector in await cur.fetchall()}
        if len(found) != len(wanted):
            raise StalePlanError("stored chunks missing for reuse")
        result: dict[tuple[str, str], Vector] = {}
        position = 0
        for row in rows:
            old = row.base.chunk_hashes if row.base else ()
            for chunk in row.chunks:
                if chunk.embedding is None and not _unchanged_at_seq(old, chunk):
                    result[(row.key_json, chunk.hash)] = found[position]
                    position += 1
        return result

    async def _delete_tails(
        self, conn: AsyncConnection[Any], store: sql.Composable, rows: Sequence[RowWrite]
    ) -> int:
        """Delete chunks past each row's new chunk count (all chunks for deletes)."""
        doomed = [
            {"key": orjson.Fragment(r.key_json), "keep": len(r.chunks)}
            for r in rows
            if r.base is not None and len(r.base.chunk_hashes) > len(r.chunks)
        ]
        if not doomed:
            return 0
        query = sql.SQL(
            "DELETE FROM {store} AS t USING jsonb_to_recordset(%s::jsonb) AS x(key jsonb, keep int),"
            " LATERAL jsonb_populate_record(NULL::{store}, x.key) AS r"
            " WHERE {match} AND t.chunk_seq >= x.keep"
        ).format(store=store, match=self._match("t", "r"))
        cur = await conn.execute(query, (orjson.dumps(doomed).decode(),))
        return cur.rowcount

    async def _upsert_chunks(
        self,
        conn: AsyncConnection[Any],
        store: sql.Composable,
        rows: Sequence[RowWrite],
        copies: dict[tuple[str, str], Vector],
    ) -> int:
        """Insert or overwrite every chunk that is new or changed at its seq.

        The chunks go through binary COPY into a temporary table, then one upsert: about four
        times faster than sending vectors as text (measured: 1,280 chunks of 256 dims in
        0.07 s against 0.27 s).
        """
        records: list[tuple[str, int, str, Vector]] = []
        for row in rows:
            old = row.base.chunk_hashes if row.base else ()
            for chunk in row.chunks:
                if chunk.embedding is None and _unchanged_at_seq(old, chunk):
                    continue
                vector = chunk.embedding if chunk.embedding is not None else copies[(row.key_json, chunk.hash)]
                records.append((row.key_json, chunk.seq, chunk.chunk, np.asarray(vector, dtype=np.float32)))
        if not records:
            return 0
        await self._binary_vectors(conn)
        await conn.execute(
            "CREATE TEMPORARY TABLE IF NOT EXISTS vectorizer_stage"
            " (key text, seq int, chunk text, embedding vector) ON COMMIT DELETE ROWS"
        )
        async with conn.cursor().copy(
            "COPY vectorizer_stage (key, seq, chunk, embedding) FROM STDIN WITH (FORMAT BINARY)"
        ) as copy:
            copy.set_types(["text", "int4", "text", "vector"])
            for record in records:
                await copy.write_row(record)
        pk = sql.SQL(", ").join(sql.Identifier(c) for c in self.pk_columns)
        pk_r = sql.SQL(", ").join(sql.Identifier("r", c) for c in self.pk_columns)
        await conn.execute(sql.SQL(
            "INSERT INTO {store} ({pk}, chunk_seq, chunk, embedding)"
            " SELECT {pk_r}, x.seq, x.chunk, x.embedding FROM vectorizer_stage AS x"
            " CROSS JOIN LATERAL jsonb_populate_record(NULL::{store}, x.key::jsonb) AS r"
            " ON CONFLICT ({pk}, chunk_seq) DO UPDATE"
            " SET chunk = EXCLUDED.chunk, embedding = EXCLUDED.embedding"
        ).format(store=store, pk=pk, pk_r=pk_r))
        await conn.execute("TRUNCATE vectorizer_stage")
        return len(records)

    async def _upsert_applied(self, conn: AsyncConnection[Any], rows: Sequence[RowWrite]) -> None:
        payload = [
            {"pk": orjson.Fragment(r.key_json), "lsn": r.lsn, "hashes": r.hashes} for r in rows
        ]
        await conn.execute(
            "INSERT INTO vectorizer.applied_state (vectorizer_id, version, pk, lsn, chunk_hashes)"
            " SELECT %s, %s, x.pk, '0/0'::pg_lsn + x.lsn, x.hashes"
            " FROM jsonb_to_recordset(%s::jsonb) AS x(pk jsonb, lsn numeric, hashes text[])"
            " ON CONFLICT (vectorizer_id, version, pk) DO UPDATE"
            " SET lsn = EXCLUDED.lsn, chunk_hashes = EXCLUDED.chunk_hashes, updated_at = now()",
            (self.vectorizer_id, self.version, orjson.dumps(payload).decode()),
        )

    def _match(self, left: str, right: str) -> sql.Composable:
        """``left.k1 = right.k1 AND ...`` over the primary-key columns."""
        return sql.SQL(" AND ").join(
            sql.SQL("{} = {}").format(sql.Identifier(left, c), sql.Identifier(right, c))
            for c in self.pk_columns
        )


def _as_array(vector: Any) -> Vector:
    """pgvector's loader gives ``Vector`` objects; COPY wants arrays."""
    return vector.to_numpy() if hasattr(vector, "to_numpy") else np.asarray(vector, dtype=np.float32)


def _unchanged_at_seq(old_hashes: Sequence[str], chunk: ChunkWrite) -> bool:
    return chunk.seq < len(old_hashes) and old_hashes[chunk.seq] == chunk.hash
