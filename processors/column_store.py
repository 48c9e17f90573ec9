"""The column destination (pgai's ``DestinationColumnConfig``): one vector per row, written into a
column of the source table itself.

There is no store table: a row's one chunk (``ChunkingNoneConfig``: the whole formatted text)
is written with ``UPDATE <source> SET <embedding_column> = ...``, in the batch's transaction,
together with ``vectorizer.applied_state`` (LSN and hash, exactly as for a store table).

That UPDATE is itself a change of the source, so it comes back as an event. It never loops:
the event's formatted text has the hash the row already has, so the pipeline plans neither an
embedding nor a write for it (:meth:`ColumnStore.write` writes only new vectors; an unchanged
chunk is left alone), and only the applied LSN moves.

It never overwrites a newer change: the UPDATE applies only while the row is still the one the
event described, i.e. its ``xmin`` is the event's transaction, or (when another writer touched
the row since, e.g. a second vectorizer writing its own column) every column the vectorizer
reads still holds the event's value. Otherwise the row changed since and its own, newer event
is on its way: nothing is written, and the row keeps no hash, so that event embeds it. Snapshot
``read`` events have no transaction; they write unguarded, and a newer change's event, which
is applied after them (LSN order), corrects the vector.

A TRUNCATE needs nothing in the source (the rows are gone), only the applied state; deletes
likewise. A row that fails for good gets NULL, as a store table loses its chunks: no vector
then stands for text the row no longer has.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import orjson
from psycopg import AsyncConnection, sql
from psycopg.types.json import Jsonb

from pgai_orm.events import RowChange
from processors.store import EmbeddingStore, RowWrite, StalePlanError, VersionState, WriteOutcome

__all__ = ["ColumnStore", "store_for"]


class ColumnStore(EmbeddingStore):
    """Writes the embedding column of ``(vectorizer_id, version)``'s source rows."""

    def __init__(self, vectorizer_id: int, version: int, source_schema: str, source_table: str,
                 pk_columns: Sequence[str], embedding_column: str,
                 read_columns: frozenset[str]) -> None:
        super().__init__(vectorizer_id, version, source_schema, source_table, pk_columns)
        self.embedding_column = embedding_column
        self.read_columns = read_columns

    async def truncate(self, conn: AsyncConnection[Any], state: VersionState, lsn: int) -> None:
        """Forget rows applied before ``lsn``; the source itself was truncated already."""
        await conn.execute(
            "DELETE FROM vectorizer.applied_state WHERE vectorizer_id = %s AND version = %s"
            " AND lsn < '0/0'::pg_lsn + %s::numeric", (self.vectorizer_id, self.version, lsn))
        await conn.execute(
            "UPDATE vectorizer.config_versions SET truncated_lsn ="
            " greatest(truncated_lsn, '0/0'::pg_lsn + %s::numeric)"
            " WHERE vectorizer_id = %s AND version = %s", (lsn, self.vectorizer_id, self.version))

    async def write(
        self, conn: AsyncConnection[Any], state: VersionState, rows: Sequence[RowWrite],
        changes: Sequence[RowChange] = (),
    ) -> WriteOutcome:
        """Lock, re-check, UPDATE the rows whose vector changed, record the applied state."""
        outcome = WriteOutcome()
        accepted = await self._accept(conn, state, rows, outcome)
        if not accepted:
            return outcome
        by_key = {c.key_json: c for c in changes}
        updates: dict[str, tuple[RowWrite, Any]] = {}  # key -> (row, vector, or None for NULL)
        for row in accepted:
            change = by_key.get(row.key_json)
            if not row.chunks:
                # a delete (the row is gone) or a failed row (its old vector must go)
                if row.base is not None and row.base.chunk_hashes and not (
                        change is not None and change.is_delete):
                    updates[row.key_json] = (row, None)
                continue
            if len(row.chunks) != 1:
                raise StalePlanError(f"{row.key_json}: a column destination holds one chunk")
            chunk = row.chunks[0]
            if chunk.embedding is not None:
                updates[row.key_json] = (row, np.asarray(chunk.embedding, dtype=np.float32))
            elif not (row.base and row.base.chunk_hashes[:1] == (chunk.hash,)):
                raise StalePlanError(row.key_json)  # reuse of a vector the row does not have
        written = await self._update(conn, list(updates.values()), by_key) if updates else set()
        final: list[RowWrite] = []
        for row in accepted:
            if row.key_json not in updates:
                final.append(row)  # nothing to write: the vector is already the row's
            elif row.key_json in written:
                final.append(row)
                if updates[row.key_json][1] is None:
                    outcome.chunks_deleted += 1
                else:
                    outcome.chunks_written += 1
            else:
                # skipped by the guard (the row changed since) or gone: keep no hash, so the
                # row's next event embeds it
                final.append(dataclasses.replace(row, chunks=()))
        await self._upsert_applied(conn, final)
        outcome.applied_keys = {r.key_json for r in accepted}
        return outcome

    async def _update(self, conn: AsyncConnection[Any], updates: Sequence[tuple[RowWrite, Any]],
                      changes: dict[str, RowChange]) -> set[str]:
        """One guarded UPDATE for all rows (vectors through binary COPY); the keys it wrote."""
        await self._binary_vectors(conn)
        await conn.execute(
            "CREATE TEMPORARY TABLE IF NOT EXISTS vectorizer_column_stage"
            " (key text, xid bigint, vals jsonb, embedding vector) ON COMMIT DELETE ROWS")
        names = await self._key_names(conn)
        async with conn.cursor().copy(
            "COPY vectorizer_column_stage (key, xid, vals, embedding) FROM STDIN WITH (FORMAT BINARY)"
        ) as copy:
            copy.set_types(["text", "int8", "jsonb", "vector"])
            for row, vector in updates:
                change = changes.get(row.key_json)
                xid = change.txn.xid if change is not None else None
                values = {c: change.row[c] for c in self.read_columns
                          if change is not None and change.row is not None and c in change.row}
                await copy.write_row((self._source_key(row.key_json, names), xid,
                                      Jsonb(values), vector))
        column = sql.Identifier(self.embedding_column)
        query = sql.SQL(
            "UPDATE {src} AS s SET {col} = x.embedding FROM vectorizer_column_stage AS x"
            " CROSS JOIN LATERAL jsonb_populate_record(NULL::{src}, x.key::jsonb) AS k"
            " WHERE {match} AND (x.embedding IS NOT NULL OR s.{col} IS NOT NULL)"
            # the row is still the event's: its transaction wrote it last, or (someone else
            # wrote since) what the vectorizer reads is unchanged; snapshot reads have no xid
            " AND (x.xid IS NULL OR s.xmin = x.xid::text::xid OR NOT EXISTS ("
            "  SELECT 1 FROM jsonb_each(x.vals) AS e(c, v) WHERE (to_jsonb(s) -> e.c) IS DISTINCT FROM e.v))"
            " RETURNING x.key"
        ).format(src=self.source, col=column, match=sql.SQL(" AND ").join(
            sql.SQL("{} = {}").format(sql.Identifier("s", n), sql.Identifier("k", n)) for n in names))
        cur = await conn.execute(query)
        written = {str(r[0]) for r in await cur.fetchall()}
        await conn.execute("TRUNCATE vectorizer_column_stage")
        if names == list(self.pk_columns):
            return written
        back = {self._source_key(r.key_json, names): r.key_json for r, _ in updates}
        return {back[k] for k in written if k in back}

    async def _key_names(self, conn: AsyncConnection[Any]) -> list[str]:
        """The key columns as the source names them now (a renamed key column keeps its attnum)."""
        cur = await conn.execute(
            "SELECT store_name, source_name FROM vectorizer.source_key_columns(%s, %s)",
            self.source_name)
        current = {store: now for store, now in await cur.fetchall() if now is not None}
        return [current.get(c, c) for c in self.pk_columns]

    def _source_key(self, key_json: str, names: Sequence[str]) -> str:
        if list(names) == list(self.pk_columns):
            return key_json
        renamed = dict(zip(self.pk_columns, names, strict=True))
        return orjson.dumps({renamed.get(k, k): v for k, v in orjson.loads(key_json).items()}).decode()



def store_for(vectorizer_id: int, version: int, source_schema: str, source_table: str,
              pk_columns: Sequence[str], config: Mapping[str, Any],
              read_columns: frozenset[str]) -> EmbeddingStore:
    """The writer of a version's destination: its store table, or the source's own column."""
    destination = config.get("destination") or {}
    if destination.get("implementation") == "column":
        return ColumnStore(vectorizer_id, version, source_schema, source_table, pk_columns,
                           str(destination["embedding_column"]), read_columns)
    return EmbeddingStore(vectorizer_id, version, source_schema, source_table, pk_columns)
