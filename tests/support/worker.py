"""A source table with a producer that speaks the event contract, and `vectorizer worker`
as a separate process: the processors' tests without a connector.

The events are produced with kafka-python the way ``docs/architecture.md`` specifies
(canonical JSON keys, default partitioner, truncate on every partition), encoded by the
contract's own encoder, from rows that really are in the source table, so re-reads of
unchanged TOAST values hit real data. ``Source`` also says whether the store holds exactly
what the source implies (chunked, formatted and embedded outside the pipeline).
"""

from __future__ import annotations

import functools
import os
import signal
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import psycopg
from kafka import KafkaProducer
from kafka.admin import KafkaAdminClient, NewTopic
from psycopg import sql

from infra.services import DEV_SESSION_TIMEOUT_S
from pgai_orm.embedders import create_embedder
from pgai_orm.names import topic_name
from processors.chunking import chunker_for
from processors.formatting import formatter_for
from processors.pipeline import config_objects
from tests.support import polling
from tests.support.events import row_change, tombstone, truncate_records
from tests.support.vectorizers import create_vectorizer

SESSION_TIMEOUT = str(DEV_SESSION_TIMEOUT_S)
WAIT_S = 60.0

TEXT = (
    "Postgres streams every change through logical replication. The connector turns each "
    "change into an event. Kafka keeps the events in order per row. Faust agents chunk and "
    "embed the text. The store keeps one vector per chunk. Queries join the store to the "
    "source table. "
)


def wait_for(condition: Callable[[], Any], what: str, timeout: float = WAIT_S) -> Any:
    """:func:`tests.support.polling.wait_for` at the pace of a worker's batches."""
    return polling.wait_for(condition, what, timeout, interval=0.1)


@dataclass
class Source:
    """A source table with a vectorizer, and a producer that speaks the event contract."""

    url: str
    servers: str
    table: str
    prefix: str
    vectorizer_id: int
    config: dict[str, Any]
    partitions: int
    lsn: int = 1000
    producer: KafkaProducer = field(init=False)
    sent: list[tuple[bytes, bytes | None, int | None]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.producer = KafkaProducer(bootstrap_servers=self.servers, acks="all")

    @functools.cached_property
    def topic(self) -> str:
        """The source's topic (read once: every send names it)."""
        with psycopg.connect(self.url) as conn:
            database = conn.execute("SELECT current_database()").fetchone()[0]  # type: ignore[index]
        return topic_name(self.prefix, database, "public", self.table)

    def sql(self, query: str, params: Any = None) -> list[tuple[Any, ...]]:
        with psycopg.connect(self.url, autocommit=True) as conn:
            cur = conn.execute(query, params)
            return cur.fetchall() if cur.description else []

    def _send(self, record: tuple[bytes, bytes | None], partition: int | None = None) -> None:
        key, value = record
        self.sent.append((key, value, partition))
        self.producer.send(self.topic, key=key, value=value, partition=partition)

    def resend_everything(self) -> None:
        for key, value, partition in list(self.sent):
            self.producer.send(self.topic, key=key, value=value, partition=partition)
        self.producer.flush()

    def _next_lsn(self) -> int:
        self.lsn += 10
        return self.lsn

    def row(self, id_: int) -> dict[str, Any]:
        return self.sql(sql.SQL("SELECT to_jsonb(t) FROM {} t WHERE id = %s")
                        .format(sql.Identifier(self.table)).as_string(), (id_,))[0][0]

    def upsert(self, id_: int, op: str = "insert", toast: tuple[str, ...] = (),
               source: str | None = None, **values: Any) -> None:
        """Write the row in Postgres, then publish its event (``toast`` columns left out;
        ``source``: the catalog instance id the event names as its writer)."""
        cols = ["id", *values]
        self.sql(
            sql.SQL("INSERT INTO {t} ({c}) VALUES ({v}) ON CONFLICT (id) DO UPDATE SET ({c}) = ROW({e})")
            .format(t=sql.Identifier(self.table), c=sql.SQL(", ").join(map(sql.Identifier, cols)),
                    v=sql.SQL(", ").join(sql.Placeholder() * len(cols)),
                    e=sql.SQL(", ").join(sql.Identifier("excluded", c) for c in cols)).as_string(),
            [id_, *values.values()],
        )
        row = {k: v for k, v in self.row(id_).items() if k not in toast}
        self._send(row_change(op, self._next_lsn(), {"id": id_}, row, unchanged_toast=toast,
                              table=self.table, source=source))

    def send_row(self, id_: int, op: str, row: dict[str, Any], source: str | None = None) -> None:
        """Publish an event with exactly this row (to model rows the template cannot use)."""
        self._send(row_change(op, self._next_lsn(), {"id": id_}, row, table=self.table,
                              source=source))

    def instance_id(self) -> str:
        """The catalog instance id of the source's database."""
        return self.sql("SELECT id::text FROM vectorizer.instance")[0][0]

    def delete(self, id_: int) -> None:
        self.sql(sql.SQL("DELETE FROM {} WHERE id = %s").format(sql.Identifier(self.table)).as_string(), (id_,))
        self._send(row_change("delete", self._next_lsn(), {"id": id_}, table=self.table))
        self._send(tombstone({"id": id_}))

    def truncate(self) -> None:
        self.sql(sql.SQL("TRUNCATE {}").format(sql.Identifier(self.table)).as_string())
        for partition, key, value in truncate_records(self._next_lsn(), range(self.partitions),
                                                      table=self.table):
            self._send((key, value), partition)

    def flush(self) -> None:
        self.producer.flush()

    # -- what the store holds vs what the source implies ----------------------------------------

    def store_table(self) -> str:
        return self.sql("SELECT target_table FROM vectorizer.vectorizers WHERE id = %s",
                        (self.vectorizer_id,))[0][0]

    def store_rows(self) -> list[tuple[int, int, str, str]]:
        return self.sql(sql.SQL("SELECT id, chunk_seq, chunk, embedding::text FROM {} ORDER BY 1, 2")
                        .format(sql.Identifier(self.store_table())).as_string())

    def expected_rows(self, config: dict[str, Any] | None = None) -> list[tuple[int, int, str, list[float]]]:
        """Chunk, format and embed every source row with the config, outside the pipeline."""
        objects = config_objects(config or self.config)
        chunker, formatter = chunker_for(objects.chunking), formatter_for(objects.formatting)
        embedder = create_embedder(objects.embedding)
        result: list[tuple[int, int, str, list[float]]] = []
        rows = [r[0] for r in self.sql(sql.SQL("SELECT to_jsonb(t) FROM {} t ORDER BY id")
                                       .format(sql.Identifier(self.table)).as_string())]
        for row in rows:
            chunks = chunker(row["content"])
            vectors = embedder.embed_sync([formatter(c, row) for c in chunks]) if chunks else []
            result += [(row["id"], seq, c, v) for seq, (c, v) in enumerate(zip(chunks, vectors, strict=True))]
        return result

    def store_matches_source(self, config: dict[str, Any] | None = None) -> bool:
        stored, expected = self.store_rows(), self.expected_rows(config)
        if [r[:3] for r in stored] != [e[:3] for e in expected]:
            return False
        return all(np.allclose(orjson.loads(s[3]), e[3], atol=1e-5)
                   for s, e in zip(stored, expected, strict=True))


def make_source(url: str, servers: str, config: dict[str, Any], partitions: int = 2, *,
                create_topic: bool = True, external_content: bool = False,
                prefix: str | None = None) -> Source:
    """A fresh ``posts_*`` table (id, title, content, views) with a vectorizer on it.

    ``create_topic=False`` leaves the topic to a connector under test; ``external_content``
    stores ``content`` uncompressed, so a long value really goes out of line and pgoutput sends
    it as unchanged TOAST on updates that do not touch it. ``prefix``: the topic prefix (a fresh
    one by default); sources sharing one are served by one worker.
    """
    table = f"posts_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE TABLE {} (id int PRIMARY KEY, title text, content text,"
                             " views int DEFAULT 0)").format(sql.Identifier(table)))
        if external_content:
            conn.execute(sql.SQL("ALTER TABLE {} ALTER COLUMN content SET STORAGE EXTERNAL")
                         .format(sql.Identifier(table)))
    vectorizer_id = create_vectorizer(url, table, config)
    source = Source(url, servers, table, prefix or f"t{uuid.uuid4().hex[:6]}", vectorizer_id,
                    config, partitions)
    if not create_topic:
        return source
    admin = KafkaAdminClient(bootstrap_servers=servers)
    try:
        admin.create_topics([NewTopic(source.topic, partitions, 1)])
    finally:
        admin.close()
    return source


@contextmanager
def worker(source: Source, *extra: str, env: dict[str, str] | None = None,
           log: Path | None = None) -> Iterator[subprocess.Popen[bytes]]:
    """`vectorizer worker` as a separate process; SIGTERM on exit."""
    process = start_worker(source, *extra, env=env, log=log)
    try:
        yield process
    finally:
        stop_worker(process)


def start_worker(source: Source, *extra: str, env: dict[str, str] | None = None,
                 log: Path | None = None) -> subprocess.Popen[bytes]:
    output = log.open("ab") if log is not None else None
    return subprocess.Popen(
        [sys.executable, "-m", "processors.cli", "--topic-prefix", source.prefix,
         "--session-timeout", SESSION_TIMEOUT, "--batch-within", "0.2", "--poll-interval", "0.5",
         "--without-web", "--loglevel", "warning", *extra],
        env={**os.environ, "DATABASE_URL": source.url, "KAFKA_BOOTSTRAP_SERVERS": source.servers,
             **(env or {})},
        stdout=output, stderr=subprocess.STDOUT if output else None,
    )


def stop_worker(process: subprocess.Popen[bytes], sig: int = signal.SIGTERM) -> None:
    if process.poll() is None:
        process.send_signal(sig)
        try:
            process.wait(timeout=40)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
