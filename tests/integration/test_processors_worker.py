"""`vectorizer worker` against a real Postgres and broker, with events produced per the contract.

The workers run as separate processes (the supervisor and its faust children), exactly as in
production. The events are produced here with kafka-python the way ``docs/architecture.md``
specifies (canonical JSON keys, default partitioner, truncate on every partition), from rows
that really are in the source table, so re-reads of unchanged TOAST values hit real data.
Every wait polls a condition with a deadline.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import psutil
import psycopg
import pytest
from kafka import KafkaConsumer, KafkaProducer
from kafka.admin import KafkaAdminClient, NewTopic
from psycopg import sql

from pgai_orm.catalog import catalog_sql
from pgai_orm.configuration import (
    ChunkingRecursiveCharacterTextSplitterConfig,
    EmbeddingLocalConfig,
    EmbeddingOpenaiConfig,
    FormattingPythonTemplateConfig,
    VectorizerConfig,
)
from pgai_orm.names import consumer_group, topic_name
from processors.app import (
    committed_offsets,
    fetch_high_watermarks,
)
from processors.chunking import chunker_for
from pgai_orm.embedders import create_embedder
from pgai_orm.events import canonical_key
from processors.formatting import formatter_for
from processors.pipeline import config_objects
from tests import polling
from tests.fake_providers._server import Fault
from tests.fake_providers.openai_server import FakeOpenAIServer

SESSION_TIMEOUT = "3"
WAIT_S = 60.0

TEXT = (
    "Postgres streams every change through logical replication. The connector turns each "
    "change into an event. Kafka keeps the events in order per row. Faust agents chunk and "
    "embed the text. The store keeps one vector per chunk. Queries join the store to the "
    "source table. "
)


def local_config(dimensions: int = 256, template: str = "$title - $chunk") -> dict[str, Any]:
    """A vectorizer config as the catalog stores it: the offline wordllama model."""
    return VectorizerConfig(
        embedding=EmbeddingLocalConfig(model="wordllama", dimensions=dimensions),
        chunking=ChunkingRecursiveCharacterTextSplitterConfig(
            chunk_column="content", chunk_size=120, chunk_overlap=20, separators=[". ", " "]),
        formatting=FormattingPythonTemplateConfig(template=template),
    ).to_dict()


def wait_for(condition: Callable[[], Any], what: str, timeout: float = WAIT_S) -> Any:
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

    @property
    def topic(self) -> str:
        with psycopg.connect(self.url) as conn:
            database = conn.execute("SELECT current_database()").fetchone()[0]  # type: ignore[index]
        return topic_name(self.prefix, database, "public", self.table)

    def sql(self, query: str, params: Any = None) -> list[tuple[Any, ...]]:
        with psycopg.connect(self.url, autocommit=True) as conn:
            cur = conn.execute(query, params)
            return cur.fetchall() if cur.description else []

    def _send(self, key: dict[str, Any], value: dict[str, Any] | None,
              partition: int | None = None) -> None:
        record = (canonical_key(key), None if value is None else orjson.dumps(value),
                  partition)
        self.sent.append(record)
        self.producer.send(self.topic, key=record[0], value=record[1], partition=partition)

    def resend_everything(self) -> None:
        for key, value, partition in list(self.sent):
            self.producer.send(self.topic, key=key, value=value, partition=partition)
        self.producer.flush()

    def _event(self, op: str, key: dict[str, Any], row: dict[str, Any] | None,
               unchanged_toast: list[str] | None = None) -> dict[str, Any]:
        self.lsn += 10
        return {"op": op, "lsn": self.lsn, "commit_lsn": self.lsn + 1,
                "commit_time": "2026-11-24T10:00:00+00:00", "xid": 1, "schema": "public",
                "table": self.table, "key": key, "row": row,
                "unchanged_toast": unchanged_toast or []}

    def row(self, id_: int) -> dict[str, Any]:
        return self.sql(sql.SQL("SELECT to_jsonb(t) FROM {} t WHERE id = %s")
                        .format(sql.Identifier(self.table)).as_string(), (id_,))[0][0]

    def upsert(self, id_: int, op: str = "insert", toast: tuple[str, ...] = (), **values: Any) -> None:
        """Write the row in Postgres, then publish its event (``toast`` columns left out)."""
        cols = ["id", *values]
        self.sql(
            sql.SQL("INSERT INTO {t} ({c}) VALUES ({v}) ON CONFLICT (id) DO UPDATE SET ({c}) = ROW({e})")
            .format(t=sql.Identifier(self.table), c=sql.SQL(", ").join(map(sql.Identifier, cols)),
                    v=sql.SQL(", ").join(sql.Placeholder() * len(cols)),
                    e=sql.SQL(", ").join(sql.Identifier("excluded", c) for c in cols)).as_string(),
            [id_, *values.values()],
        )
        row = {k: v for k, v in self.row(id_).items() if k not in toast}
        self._send({"id": id_}, self._event(op, {"id": id_}, row, list(toast)))

    def send_row(self, id_: int, op: str, row: dict[str, Any]) -> None:
        """Publish an event with exactly this row (to model rows the template cannot use)."""
        self._send({"id": id_}, self._event(op, {"id": id_}, row))

    def delete(self, id_: int) -> None:
        self.sql(sql.SQL("DELETE FROM {} WHERE id = %s").format(sql.Identifier(self.table)).as_string(), (id_,))
        self._send({"id": id_}, self._event("delete", {"id": id_}, None))
        self._send({"id": id_}, None)  # the tombstone

    def truncate(self) -> None:
        self.sql(sql.SQL("TRUNCATE {}").format(sql.Identifier(self.table)).as_string())
        event = self._event("truncate", {"__truncate__": True}, None)
        for partition in range(self.partitions):
            self._send({"__truncate__": True}, event, partition=partition)

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
            result += [(row["id"], seq, c, v) for seq, (c, v) in enumerate(zip(chunks, vectors))]
        return result

    def store_matches_source(self, config: dict[str, Any] | None = None) -> bool:
        stored, expected = self.store_rows(), self.expected_rows(config)
        if [r[:3] for r in stored] != [e[:3] for e in expected]:
            return False
        return all(np.allclose(orjson.loads(s[3]), e[3], atol=1e-5)
                   for s, e in zip(stored, expected))


@pytest.fixture
def database(fresh_database_url: str) -> str:
    """A fresh database per test: the supervisor serves every vectorizer of its database."""
    with psycopg.connect(fresh_database_url, autocommit=True) as conn:
        conn.execute(catalog_sql())
    return fresh_database_url


def make_source(url: str, servers: str, config: dict[str, Any], partitions: int = 2) -> Source:
    table = f"posts_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE TABLE {} (id int PRIMARY KEY, title text, content text,"
                             " views int DEFAULT 0)").format(sql.Identifier(table)))
        vectorizer_id = conn.execute(
            "SELECT vectorizer.create_vectorizer('public', %s, NULL, NULL, NULL, NULL, NULL,"
            " %s::jsonb, 'content', %s, %s)",
            (table, orjson.dumps(config).decode(), ["title"], config["embedding"]["dimensions"]),
        ).fetchone()[0]  # type: ignore[index]
    source = Source(url, servers, table, f"t{uuid.uuid4().hex[:6]}", vectorizer_id, config, partitions)
    admin = KafkaAdminClient(bootstrap_servers=servers)
    try:
        admin.create_topics([NewTopic(source.topic, partitions, 1)])
    finally:
        admin.close()
    return source


@contextmanager
def worker(source: Source, *extra: str, env: dict[str, str] | None = None,
           log: Path | None = None) -> Iterator[subprocess.Popen[bytes]]:
    """`vectorizer worker` (the supervisor) as a separate process; SIGTERM on exit."""
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


def applied_lsns(source: Source) -> dict[int, int]:
    return {pk["id"]: int(lsn) for pk, lsn in source.sql(
        "SELECT pk, (lsn - '0/0'::pg_lsn)::bigint FROM vectorizer.applied_state"
        " WHERE vectorizer_id = %s", (source.vectorizer_id,))}


# --------------------------------------------------------------------------------------------


def test_store_follows_inserts_updates_deletes_and_truncate(database: str, kafka_bootstrap_servers: str) -> None:
    source = make_source(database, kafka_bootstrap_servers, local_config())
    for i in range(1, 21):
        source.upsert(i, title=f"post {i}", content=TEXT * (1 + i % 3))
    source.flush()
    with worker(source):
        wait_for(source.store_matches_source, "the initial rows to be embedded")
        # content change, title change (content arrives as unchanged TOAST -> re-read),
        # an update of a column the vectorizer does not read, a delete
        source.upsert(1, op="update", content="A new text. " + TEXT)
        source.upsert(2, op="update", toast=("content",), title="a better title")
        source.upsert(3, op="update", views=42)
        source.delete(4)
        source.flush()
        wait_for(source.store_matches_source, "updates and the delete to reach the store")
        assert 4 not in {r[0] for r in source.store_rows()}

        # redelivery of old events changes nothing: every one is at or below the applied LSN
        before = (source.store_rows(), applied_lsns(source))
        source.lsn -= 500
        for i in range(5, 10):
            source.send_row(i, "update", {**source.row(i), "content": "stale"})
        source.flush()
        source.lsn += 1000
        source.upsert(30, title="marker", content=TEXT)
        source.flush()
        wait_for(lambda: 30 in applied_lsns(source), "a marker row behind the stale events")
        after = (source.store_rows(), applied_lsns(source))
        assert [r for r in after[0] if r[0] != 30] == before[0]
        assert {k: v for k, v in after[1].items() if k != 30} == before[1]

        # the database drops the worker's connections: it reconnects and retries the batch
        source.sql("SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                   " WHERE datname = current_database() AND pid <> pg_backend_pid()")
        source.upsert(31, title="after reconnect", content=TEXT)
        source.flush()
        wait_for(lambda: 31 in applied_lsns(source), "the worker to reconnect")

        source.truncate()
        source.upsert(40, title="after truncate", content=TEXT)
        source.flush()
        wait_for(lambda: {r[0] for r in source.store_rows()} == {40}, "truncate to empty the store")
        assert source.store_matches_source()


def openai_config(server: FakeOpenAIServer) -> dict[str, Any]:
    config = local_config()
    config["embedding"] = EmbeddingOpenaiConfig(
        model="text-embedding-3-small", dimensions=64, api_key_name="PROCESSORS_TEST_KEY",
        base_url=server.base_url).to_dict()
    return config


def embedded_inputs(server: FakeOpenAIServer) -> int:
    return sum(len(body["input"]) for body in server.embedding_requests())


def test_only_changed_chunks_are_embedded_and_failures_are_recorded(
        database: str, kafka_bootstrap_servers: str, monkeypatch: pytest.MonkeyPatch) -> None:
    with FakeOpenAIServer() as server:
        monkeypatch.setenv("PROCESSORS_TEST_KEY", server.api_key)
        source = make_source(database, kafka_bootstrap_servers, openai_config(server))
        for i in range(1, 6):
            source.upsert(i, title=f"post {i}", content=TEXT)
        source.flush()
        with worker(source, env={"PROCESSORS_TEST_KEY": server.api_key}):
            wait_for(lambda: len(applied_lsns(source)) == 5, "five rows applied")
            calls, inputs = len(server.embedding_requests()), embedded_inputs(server)
            chunks = len(source.store_rows())
            assert inputs == chunks  # identical chunks of different rows differ by title

            # a column the vectorizer does not read: a new LSN, no embedding call, same store
            store_before = source.store_rows()
            source.upsert(1, op="update", views=7)
            source.flush()
            wait_for(lambda: applied_lsns(source)[1] == source.lsn, "the unrelated update")
            assert len(server.embedding_requests()) == calls
            assert source.store_rows() == store_before

            # an appended sentence: only the chunks whose text changed are embedded; a 429 on
            # the way is retried (bounded, with backoff) and leaves no error behind
            server.add_fault(Fault(status=429, times=1, headers={"retry-after-ms": "50"}))
            source.upsert(2, op="update", content=TEXT + "One more sentence at the end.")
            source.flush()
            wait_for(lambda: applied_lsns(source)[2] == source.lsn, "the content update")
            assert len(server.embedding_requests()) == calls + 2  # the 429 and its retry
            new_inputs = len(server.embedding_requests()[-1]["input"])
            assert 0 < new_inputs < len([r for r in source.store_rows() if r[0] == 2])
            assert not source.sql("SELECT 1 FROM vectorizer.errors")

            # a template column missing from the row, and a provider rejecting a row for good
            source.send_row(3, "update", {"id": 3, "content": TEXT, "views": 0})
            source.flush()
            wait_for(lambda: source.sql("SELECT step, message FROM vectorizer.errors"
                                        " WHERE vectorizer_id = %s", (source.vectorizer_id,)),
                     "the format error")
            server.add_fault(Fault(status=400, times=2, body={"error": {"message": "bad input"}}))
            source.upsert(4, op="update", content="Rejected text. " + TEXT)
            source.upsert(5, op="update", views=3)
            source.flush()
            errors = wait_for(lambda: (e := source.sql(
                "SELECT pk, step, message FROM vectorizer.errors WHERE vectorizer_id = %s"
                " ORDER BY pk", (source.vectorizer_id,))) and len(e) == 2 and e,
                "the embedding error")
            assert [(pk["id"], step) for pk, step, _ in errors] == [(3, "format"), (4, "embed")]
            assert all(server.api_key not in message for _, _, message in errors)
            wait_for(lambda: applied_lsns(source)[5] == source.lsn, "the row after the failure")
            assert {r[0] for r in source.store_rows()} == {1, 2, 5}

            dead = dead_letters(source, 2)
            assert sorted((orjson.loads(k)["id"], v["step"]) for k, v in dead) == [(3, "format"), (4, "embed")]
            assert all(server.api_key not in orjson.dumps(v).decode() for _, v in dead)

            # a later good update of the failed rows clears their errors
            source.upsert(3, op="update", title="back", content=TEXT)
            source.upsert(4, op="update", content=TEXT)
            source.flush()
            wait_for(lambda: not source.sql("SELECT 1 FROM vectorizer.errors WHERE vectorizer_id = %s",
                                            (source.vectorizer_id,)), "the errors to be cleared")
            wait_for(source.store_matches_source, "the store to match the source")
            wait_for(lambda: caught_up(source), "the group to commit everything")

            # every event delivered again (an at-least-once producer resending after a crash):
            # no duplicate chunk, no embedding call, no LSN moves
            calls, store_before, lsns = (len(server.embedding_requests()), source.store_rows(),
                                         applied_lsns(source))
            source.resend_everything()
            wait_for(lambda: caught_up(source), "the redelivered events to be consumed")
            assert len(server.embedding_requests()) == calls
            assert source.store_rows() == store_before
            assert applied_lsns(source) == lsns


def group(source: Source) -> str:
    database = source.sql("SELECT current_database()")[0][0]
    return consumer_group(source.prefix, database, source.vectorizer_id, 1)


def caught_up(source: Source) -> bool:
    """The version's group committed every offset up to the topic's high-water marks."""
    async def check() -> bool:
        marks = await fetch_high_watermarks(source.servers, source.topic)
        committed = await committed_offsets(source.servers, group(source), source.topic)
        return marks is not None and all(committed.get(p, 0) >= o for p, o in marks.items())
    return asyncio.run(check())


def dead_letters(source: Source, count: int) -> list[tuple[bytes, dict[str, Any]]]:
    consumer = KafkaConsumer(source.topic + ".dlq", bootstrap_servers=source.servers,
                             auto_offset_reset="earliest", enable_auto_commit=False,
                             consumer_timeout_ms=500)
    found: list[tuple[bytes, dict[str, Any]]] = []
    try:
        deadline = time.monotonic() + WAIT_S
        while len(found) < count and time.monotonic() < deadline:
            for message in consumer:
                found.append((message.key, orjson.loads(message.value)))
    finally:
        consumer.close()
    return found


def test_two_workers_a_crash_and_rebalances_lose_and_duplicate_nothing(
        database: str, kafka_bootstrap_servers: str, tmp_path: Path) -> None:
    source = make_source(database, kafka_bootstrap_servers, local_config(), partitions=4)
    for i in range(1, 151):
        source.upsert(i, title=f"post {i}", content=TEXT * (1 + i % 2))
    source.flush()
    log_a, log_b = tmp_path / "a.log", tmp_path / "b.log"
    first = start_worker(source, "--batch-size", "16", "--loglevel", "info", log=log_a)
    try:
        wait_for(lambda: len(applied_lsns(source)) >= 20, "the first worker to make progress")
        with worker(source, "--batch-size", "16", "--loglevel", "info", log=log_b):
            for i in range(151, 301):
                source.upsert(i, title=f"post {i}", content=TEXT)
            for i in range(1, 301, 7):
                source.upsert(i, op="update", content="Edited. " + TEXT)
            source.flush()
            wait_for(lambda: "embedded=" in log_b.read_text(), "the second worker to get partitions")
            # a crash: the first worker's faust process dies without committing anything more
            faust_child = psutil.Process(first.pid).children()[0]
            faust_child.kill()
            wait_for(lambda: len(psutil.Process(first.pid).children()) == 1 and
                     psutil.Process(first.pid).children()[0].pid != faust_child.pid,
                     "the supervisor to restart the crashed worker")
            for i in range(301, 351):
                source.upsert(i, title=f"post {i}", content=TEXT)
            source.flush()
            wait_for(lambda: len(applied_lsns(source)) >= 330, "progress after the crash")
            stop_worker(first)  # a clean leave: its partitions move to the other worker
            for i in range(351, 401):
                source.upsert(i, title=f"post {i}", content=TEXT)
            source.flush()
            wait_for(lambda: len(applied_lsns(source)) == 400, "every row applied", timeout=90)
            wait_for(lambda: caught_up(source), "the group to commit everything")
            assert source.store_matches_source()
            assert "embedded=" in log_a.read_text()
    finally:
        stop_worker(first)


def test_reembedding_replays_the_topic_and_activates_the_new_version(
        database: str, kafka_bootstrap_servers: str) -> None:
    source = make_source(database, kafka_bootstrap_servers, local_config())
    for i in range(1, 31):
        source.upsert(i, title=f"post {i}", content=TEXT)
    source.flush()
    with worker(source):
        wait_for(source.store_matches_source, "version 1 to be built")
        name = source.sql("SELECT name FROM vectorizer.vectorizers WHERE id = %s",
                          (source.vectorizer_id,))[0][0]
        new_config = local_config(dimensions=128)
        source.sql("SELECT vectorizer.alter_vectorizer(%s, %s::jsonb, NULL, NULL, 128)",
                   (name, orjson.dumps({"embedding": new_config["embedding"]}).decode()))
        source.upsert(31, title="written while building", content=TEXT)
        source.flush()
        wait_for(lambda: source.sql("SELECT config_version FROM vectorizer.vectorizers WHERE id = %s",
                                    (source.vectorizer_id,))[0][0] == 2, "version 2 to be activated")
        dims = source.sql(sql.SQL("SELECT DISTINCT vector_dims(embedding) FROM {}")
                          .format(sql.Identifier(source.store_table())).as_string())
        assert dims == [(128,)]
        wait_for(lambda: source.store_matches_source(new_config), "version 2 to match the source")
        source.upsert(32, title="after the switch", content=TEXT)
        source.flush()
        wait_for(lambda: source.store_matches_source(new_config), "the live store to follow")
        statuses = source.sql("SELECT version, status FROM vectorizer.config_versions"
                              " WHERE vectorizer_id = %s ORDER BY version", (source.vectorizer_id,))
        assert statuses == [(1, "retired"), (2, "active")]
